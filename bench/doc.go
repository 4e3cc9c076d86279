// Package bench holds benchmarks that compare package backoff with
// github.com/cenkalti/backoff/v5 side by side, in a module of its own so that
// the main module does not depend on the library it is compared with. The
// contention simulation of "Exponential Backoff And Jitter" lives in
// package awssim and command cmd/awssim.
//
// Run the comparison with
//
//	go test -run '^$' -bench . -benchmem
package bench
