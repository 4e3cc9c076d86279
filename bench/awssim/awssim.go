// Package awssim is a discrete-event port of the contention simulation in
// Marc Brooker's "Exponential Backoff And Jitter" (AWS Architecture Blog,
// 2015; aws-samples/aws-arch-backoff-simulator), driven by the strategies of
// package backoff.
//
// The model: N clients each want to update the same row once, under
// optimistic concurrency control. A client reads the row's version, then
// writes with that version; the server accepts the write only if the version
// is still current, and increments it. A client whose write is rejected
// backs off, then reads again. Every message crosses a network whose delay
// is |N(10ms, 2ms)|. Only writes are counted as calls (reads are free, as in
// the original), and a trial's completion time is the time at which the last
// client learns that its write succeeded.
//
// The timing of one round, as in the original:
//
//	t0                 read reaches the server   (t0 + net)
//	                   version reaches client    (+ net)
//	                   write reaches the server  (+ net)  ← conflict check, calls++
//	                   result reaches client     (+ net)
//	on rejection       next read reaches server  (+ net + backoff(attempt))
//
// so the backoff delay is drawn when the rejection arrives and added to the
// network delay of the next read; attempt counts the client's rejections so
// far (1 for the first).
//
// The original's strategies map onto backoff policies as follows (its base
// is 5ms, its cap 2s):
//
//	original                                   backoff policy
//	min(cap, base·2^n)                         Exponential,  Base 10ms, Multiplier 2
//	v/2 + U(0, v/2),  v = min(cap, base·2^n)   EqualJitter,  Base 10ms, Multiplier 2
//	U(0, v)                                    FullJitter,   Base 10ms, Multiplier 2
//	sleep = min(cap, U(base, 3·sleep))         Decorrelated, Base 5ms,  Multiplier 3
//	0                                          none (no policy)
//
// The exponential family's Base is twice the original's because the original
// raises 2 to the power n = 1 at the first retry, whereas a backoff policy's
// first delay is its Base.
package awssim

import (
	"fmt"
	"math"
	"math/rand/v2"
	"time"

	"github.com/tailguard/tailguard/backoff"
)

// Params describe a simulation. The zero Params are not valid; start from
// [DefaultParams].
type Params struct {
	// Trials is the number of runs averaged per point.
	Trials int
	// Seed makes runs reproducible.
	Seed uint64
	// NetMean and NetStdDev describe the network delay |N(mean, sd)|.
	NetMean, NetStdDev time.Duration
	// Base and Cap are the original's backoff constants.
	Base, Cap time.Duration
}

// DefaultParams are the original's: 100 trials, network N(10ms, 2ms), base
// 5ms, cap 2s.
func DefaultParams() Params {
	return Params{
		Trials:    100,
		Seed:      2015,
		NetMean:   10 * time.Millisecond,
		NetStdDev: 2 * time.Millisecond,
		Base:      5 * time.Millisecond,
		Cap:       2 * time.Second,
	}
}

// Strategy is a backoff strategy under test.
type Strategy struct {
	// Name is the original's name for it.
	Name string
	// Policy computes the delays; nil retries at once.
	Policy *backoff.Policy
}

// Strategies returns the original's five strategies, in the order of its
// published table, built from p's Base and Cap.
func Strategies(p Params) ([]Strategy, error) {
	expo := func(s backoff.Strategy) backoff.Config {
		return backoff.Config{Strategy: s, Base: 2 * p.Base, Cap: p.Cap, Multiplier: 2}
	}
	cfgs := []struct {
		name string
		cfg  *backoff.Config
	}{
		{"None", nil},
		{"Exponential", ptr(expo(backoff.Exponential))},
		{"EqualJitter", ptr(expo(backoff.EqualJitter))},
		{"FullJitter", ptr(expo(backoff.FullJitter))},
		{"Decorrelated", &backoff.Config{Strategy: backoff.Decorrelated, Base: p.Base, Cap: p.Cap, Multiplier: 3}},
	}
	out := make([]Strategy, 0, len(cfgs))
	for _, c := range cfgs {
		s := Strategy{Name: c.name}
		if c.cfg != nil {
			pol, err := backoff.New(*c.cfg)
			if err != nil {
				return nil, fmt.Errorf("strategy %s: %w", c.name, err)
			}
			s.Policy = pol
		}
		out = append(out, s)
	}
	return out, nil
}

func ptr[T any](v T) *T { return &v }

// Result is the mean over the trials of one strategy and client count.
type Result struct {
	Strategy string
	Clients  int
	// Calls is the mean number of writes per trial.
	Calls float64
	// Time is the mean completion time.
	Time time.Duration
}

// Run simulates strategy s with the given number of clients, p.Trials times,
// and returns the means. Trial i uses a generator seeded from p.Seed, the
// client count, the strategy's name and i, so results do not depend on the
// order in which points are run.
func Run(p Params, s Strategy, clients int) (Result, error) {
	if p.Trials < 1 {
		return Result{}, fmt.Errorf("trials: %d is below 1", p.Trials)
	}
	if clients < 1 {
		return Result{}, fmt.Errorf("clients: %d is below 1", clients)
	}
	if p.NetMean < 0 || p.NetStdDev < 0 {
		return Result{}, fmt.Errorf("network delay: mean %v and standard deviation %v must not be negative", p.NetMean, p.NetStdDev)
	}
	sim := newSim(p, s, clients)
	var calls int
	var total time.Duration
	for trial := range p.Trials {
		sim.rng.Seed(p.Seed, seedOf(s.Name, clients, trial))
		c, t := sim.trial()
		calls += c
		total += t
	}
	return Result{
		Strategy: s.Name,
		Clients:  clients,
		Calls:    float64(calls) / float64(p.Trials),
		Time:     total / time.Duration(p.Trials),
	}, nil
}

func seedOf(name string, clients, trial int) uint64 {
	h := uint64(14695981039346656037) // FNV-1a
	for i := range len(name) {
		h ^= uint64(name[i])
		h *= 1099511628211
	}
	return h ^ uint64(clients)<<40 ^ uint64(trial)
}

// Message kinds, named after their receiver.
const (
	serverRead   = iota // a read request reaches the server
	clientRead          // the version reaches the client
	serverWrite         // a write request reaches the server
	clientResult        // the write's outcome reaches the client
)

type event struct {
	at      time.Duration
	seq     uint64 // breaks ties in arrival order
	client  int32
	kind    uint8
	payload int64 // version for clientRead and serverWrite, 1/0 for clientResult
}

type client struct {
	attempt int           // rejected writes so far
	prev    time.Duration // previous delay, for decorrelated jitter
}

type sim struct {
	p       Params
	s       Strategy
	rng     *rand.PCG
	norm    *rand.Rand
	clients []client
	queue   queue
}

func newSim(p Params, s Strategy, n int) *sim {
	src := rand.NewPCG(0, 0)
	return &sim{
		p:       p,
		s:       s,
		rng:     src,
		norm:    rand.New(src),
		clients: make([]client, n),
		queue:   make(queue, 0, 2*n),
	}
}

// net draws a network delay.
func (m *sim) net() time.Duration {
	d := float64(m.p.NetMean) + m.norm.NormFloat64()*float64(m.p.NetStdDev)
	return time.Duration(math.Abs(d))
}

// backoff returns the delay after the client's latest rejection.
func (m *sim) backoff(c *client) time.Duration {
	if m.s.Policy == nil {
		return 0
	}
	d := m.s.Policy.Delay(c.attempt, c.prev, m.rng.Uint64())
	c.prev = d
	return d
}

// trial runs one simulation to completion and returns the number of writes
// and the time of the last event.
func (m *sim) trial() (calls int, end time.Duration) {
	var version int64
	var seq uint64
	q := &m.queue
	*q = (*q)[:0]
	push := func(e event) {
		seq++
		e.seq = seq
		q.push(e)
	}
	for i := range m.clients {
		m.clients[i] = client{}
		push(event{at: m.net(), client: int32(i), kind: serverRead})
	}
	for len(*q) > 0 {
		e := q.pop()
		end = e.at
		switch e.kind {
		case serverRead:
			push(event{at: e.at + m.net(), client: e.client, kind: clientRead, payload: version})
		case clientRead:
			push(event{at: e.at + m.net(), client: e.client, kind: serverWrite, payload: e.payload})
		case serverWrite:
			calls++
			var ok int64
			if e.payload == version {
				version++
				ok = 1
			}
			push(event{at: e.at + m.net(), client: e.client, kind: clientResult, payload: ok})
		case clientResult:
			if e.payload == 1 {
				continue
			}
			c := &m.clients[e.client]
			c.attempt++
			// As in the original, the network delay is drawn before the
			// backoff delay.
			net := m.net()
			push(event{at: e.at + net + m.backoff(c), client: e.client, kind: serverRead})
		}
	}
	return calls, end
}

// queue is a binary min-heap of events ordered by time, then sequence.
type queue []event

func (q queue) less(i, j int) bool {
	if q[i].at != q[j].at {
		return q[i].at < q[j].at
	}
	return q[i].seq < q[j].seq
}

func (q *queue) push(e event) {
	*q = append(*q, e)
	h := *q
	for i := len(h) - 1; i > 0; {
		parent := (i - 1) / 2
		if !h.less(i, parent) {
			break
		}
		h[i], h[parent] = h[parent], h[i]
		i = parent
	}
}

func (q *queue) pop() event {
	h := *q
	top := h[0]
	last := len(h) - 1
	h[0] = h[last]
	h = h[:last]
	for i := 0; ; {
		l, r, small := 2*i+1, 2*i+2, i
		if l < len(h) && h.less(l, small) {
			small = l
		}
		if r < len(h) && h.less(r, small) {
			small = r
		}
		if small == i {
			break
		}
		h[i], h[small] = h[small], h[i]
		i = small
	}
	*q = h
	return top
}
