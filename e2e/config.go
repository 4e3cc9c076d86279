package e2e

import (
	"bytes"
	"fmt"
	"os"
	"text/template"
)

// Addrs are the host:port addresses of the servers of one run.
type Addrs struct {
	Prometheus, Alertmanager, Shop, Tailguard string
	// Grafana answers the annotations API.
	Grafana string
}

// TemplateData is what the configuration templates of a run see: the
// addresses, and whether the service exports native histograms only.
type TemplateData struct {
	Addrs
	NativeHistograms bool
}

// Render executes the text/template file at path with data; a missing key
// is an error.
func Render(path string, data any) ([]byte, error) {
	src, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	t, err := template.New(path).Option("missingkey=error").Parse(string(src))
	if err != nil {
		return nil, fmt.Errorf("template %s: %w", path, err)
	}
	var out bytes.Buffer
	if err := t.Execute(&out, data); err != nil {
		return nil, fmt.Errorf("template %s: %w", path, err)
	}
	return out.Bytes(), nil
}
