// Command tailguardctl is tailguard's operations tool, in the manner of
// Alertmanager's amtool: it inspects and changes the flag file, its
// journal and, through command groups added by other packages, the
// sidecar.
//
// Adding a command group: in a file of its own, write
//
//	func registerXxx(app *kingpin.Application, g *globalFlags) commands
//
// which adds a top-level command (app.Command("xxx", ...)) with its
// subcommands and flags, and returns an action per full command name
// ("xxx sub") to run once the arguments are parsed. Then add registerXxx
// to the list in run. Actions get a context cancelled on SIGINT/SIGTERM,
// write results to g.stdout in g.output format (text or json, see
// g.print) and return errors: the exit code is derived from the error
// (see exitCode), so wrap flags.ErrConflict, flags.ErrInvalid or I/O
// errors rather than printing and exiting.
package main

import (
	"io"
	"os"

	"github.com/alecthomas/kingpin/v2"
)

func main() { os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr)) }

// run parses args, runs the selected command and returns the exit code.
func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	app, g := newApp(stdin, stdout, stderr)
	cmds := commands{}
	for _, register := range []func(*kingpin.Application, *globalFlags) commands{
		registerFlags,
		registerAnalyzeGroup,
		registerSidecar,
	} {
		cmds.add(register(app, g))
	}
	return execute(app, g, cmds, args)
}
