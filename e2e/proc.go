//go:build unix

package e2e

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// Process is a child process in its own process group, so that stopping it
// stops whatever it started too. Its stdout and stderr go to a log file.
type Process struct {
	// Name identifies the process in errors and logs.
	Name string
	cmd  *exec.Cmd
	log  string

	done chan struct{}
	mu   sync.Mutex
	err  error // exit status, once done is closed
}

// Start runs bin with args in dir (empty: the current directory), with
// stdout and stderr appended to logPath and env added to the environment.
func Start(name, logPath, dir string, env []string, bin string, args ...string) (*Process, error) {
	if err := os.MkdirAll(filepath.Dir(logPath), 0o755); err != nil {
		return nil, fmt.Errorf("%s: log directory: %w", name, err)
	}
	lf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("%s: log file: %w", name, err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = lf, lf
	cmd.SysProcAttr = sysProcAttr()
	fmt.Fprintf(lf, "### %s: %s %q\n", time.Now().UTC().Format(time.RFC3339Nano), bin, args)
	if err := cmd.Start(); err != nil {
		lf.Close()
		return nil, fmt.Errorf("%s: start %s: %w", name, bin, err)
	}
	p := &Process{Name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		err := cmd.Wait()
		lf.Close()
		p.mu.Lock()
		p.err = err
		p.mu.Unlock()
		close(p.done)
	}()
	return p, nil
}

// Pid returns the process id, which is also its process group id.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// LogPath returns the file the process logs to.
func (p *Process) LogPath() string { return p.log }

// Exited reports whether the process has ended, and how.
func (p *Process) Exited() (bool, error) {
	select {
	case <-p.done:
		p.mu.Lock()
		defer p.mu.Unlock()
		return true, p.err
	default:
		return false, nil
	}
}

// Stop sends SIGTERM to the process group and waits up to grace for the
// process to exit, then sends SIGKILL to the group. It returns the exit
// error of a process that did not exit by SIGTERM or SIGKILL cleanly, and
// is safe to call more than once.
func (p *Process) Stop(grace time.Duration) error {
	if done, err := p.Exited(); done {
		return exitErr(err)
	}
	_ = syscall.Kill(-p.Pid(), syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
		_ = syscall.Kill(-p.Pid(), syscall.SIGKILL)
		<-p.done
		// The group may hold children that outlived their parent.
		_ = syscall.Kill(-p.Pid(), syscall.SIGKILL)
		return fmt.Errorf("%s did not stop within %s of SIGTERM: killed", p.Name, grace)
	}
	_ = syscall.Kill(-p.Pid(), syscall.SIGKILL)
	_, err := p.Exited()
	return exitErr(err)
}

// Kill sends SIGKILL to the process group, as a crash or an OOM kill would,
// and waits for the process to end.
func (p *Process) Kill() {
	if done, _ := p.Exited(); done {
		return
	}
	_ = syscall.Kill(-p.Pid(), syscall.SIGKILL)
	<-p.done
}

// exitErr drops the errors a stop by signal produces.
func exitErr(err error) error {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return nil
		}
	}
	return err
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// HostPort returns 127.0.0.1:port.
func HostPort(port int) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)) }
