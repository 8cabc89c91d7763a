// Package logic is the counter's logic, free of host calls: `go test ./...` tests it.
package logic

import "time"

// ViewsKey is the generic key that holds a user's view count.
func ViewsKey(id string) string { return "views:" + id }

// Recent is the shared-state update of one view.
func Recent(views int64, at time.Time) map[string]any {
	return map[string]any{"last_view": at.UTC().Format(time.RFC3339), "views": views}
}
