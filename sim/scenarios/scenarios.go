// Package scenarios holds the simulator's scenarios (*.yml) and the
// tailguard configuration they share (tailguard/*.yml), embedded so that
// the simulator runs from any directory.
package scenarios

import (
	"embed"
	"io/fs"
)

//go:embed *.yml tailguard/*.yml
var files embed.FS

// FS returns the scenario files.
func FS() fs.FS { return files }
