package backoff

import "fmt"

// Strategy selects how a [Policy] spreads retries over time.
type Strategy uint8

// The strategies. The zero Strategy is invalid.
const (
	// Exponential is capped exponential backoff without jitter.
	Exponential Strategy = iota + 1
	// FullJitter draws the delay uniformly from [0, exp(n)].
	FullJitter
	// EqualJitter keeps half of exp(n) and draws the other half uniformly.
	EqualJitter
	// Decorrelated draws the delay uniformly from [Base, Multiplier·prev].
	Decorrelated
	// GRPC is gRPC's connection backoff: exp(n) spread by ±Jitter.
	GRPC

	numStrategies = int(GRPC) + 1
)

// strategyNames are the names used by the backoff-strategy flag and by the
// strategy label of the metrics.
var strategyNames = [numStrategies]string{
	Exponential:  "exponential",
	FullJitter:   "full-jitter",
	EqualJitter:  "equal-jitter",
	Decorrelated: "decorrelated",
	GRPC:         "grpc",
}

// Strategies returns all valid strategies in declaration order.
func Strategies() []Strategy {
	return []Strategy{Exponential, FullJitter, EqualJitter, Decorrelated, GRPC}
}

// String returns the strategy's name, for example "full-jitter".
func (s Strategy) String() string {
	if s.Valid() {
		return strategyNames[s]
	}
	return fmt.Sprintf("Strategy(%d)", uint8(s))
}

// Valid reports whether s is one of the defined strategies.
func (s Strategy) Valid() bool { return s >= Exponential && s <= GRPC }

// ParseStrategy returns the strategy with the given name.
func ParseStrategy(name string) (Strategy, error) {
	for _, s := range Strategies() {
		if strategyNames[s] == name {
			return s, nil
		}
	}
	return 0, fmt.Errorf("unknown strategy %q (want exponential, full-jitter, equal-jitter, decorrelated or grpc)", name)
}

// MarshalText implements encoding.TextMarshaler.
func (s Strategy) MarshalText() ([]byte, error) {
	if !s.Valid() {
		return nil, fmt.Errorf("invalid strategy %d", uint8(s))
	}
	return []byte(strategyNames[s]), nil
}

// UnmarshalText implements encoding.TextUnmarshaler.
func (s *Strategy) UnmarshalText(text []byte) error {
	v, err := ParseStrategy(string(text))
	if err != nil {
		return err
	}
	*s = v
	return nil
}
