package main

import (
	"fmt"
	"syscall"
	"time"
)

// usageReport is the cost of a command: wall time, CPU time (user + system)
// and peak resident memory of the process.
type usageReport struct {
	Wall      time.Duration `json:"wall_ns"`
	CPU       time.Duration `json:"cpu_ns"`
	MaxRSSKiB int64         `json:"max_rss_kib"`
}

func (u usageReport) String() string {
	return fmt.Sprintf("wall %s, CPU %s (user+sys), peak RSS %.0f MiB",
		u.Wall.Round(10*time.Millisecond), u.CPU.Round(10*time.Millisecond), float64(u.MaxRSSKiB)/1024)
}

func rusage() syscall.Rusage {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return ru
}

func tv(t syscall.Timeval) time.Duration {
	return time.Duration(t.Sec)*time.Second + time.Duration(t.Usec)*time.Microsecond
}

// resources reports the usage since began and ru0; the peak RSS is the
// process's (ru_maxrss, KiB on Linux).
func resources(began time.Time, ru0 syscall.Rusage) usageReport {
	ru := rusage()
	return usageReport{
		Wall:      time.Since(began),
		CPU:       tv(ru.Utime) - tv(ru0.Utime) + tv(ru.Stime) - tv(ru0.Stime),
		MaxRSSKiB: ru.Maxrss,
	}
}
