package awssim

import (
	"sync"
)

// Sweep runs every strategy at every client count, using up to workers
// goroutines, and returns the results indexed [client count][strategy].
// Results do not depend on workers.
func Sweep(p Params, strategies []Strategy, clients []int, workers int) ([][]Result, error) {
	out := make([][]Result, len(clients))
	for i := range out {
		out[i] = make([]Result, len(strategies))
	}
	type job struct{ ci, si int }
	jobs := make(chan job)
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
	)
	for range max(workers, 1) {
		wg.Go(func() {
			for j := range jobs {
				r, err := Run(p, strategies[j.si], clients[j.ci])
				if err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
					continue
				}
				out[j.ci][j.si] = r
			}
		})
	}
	// Largest client counts first: they take longest.
	for ci := len(clients) - 1; ci >= 0; ci-- {
		for si := range strategies {
			jobs <- job{ci, si}
		}
	}
	close(jobs)
	wg.Wait()
	return out, firstErr
}
