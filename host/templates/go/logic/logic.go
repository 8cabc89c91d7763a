// Package logic is the plugin's own logic, free of host calls: `go test ./...` tests it.
package logic

import "fmt"

// Summary is the log line of one run.
func Summary(action, id string, runs int64) string {
	return fmt.Sprintf("%s for %s: run %d", action, id, runs)
}
