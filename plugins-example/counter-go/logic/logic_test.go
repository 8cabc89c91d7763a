package logic

import (
	"testing"
	"time"
)

func TestTheViewsKeyAndTheUpdateOfAView(t *testing.T) {
	if got := ViewsKey("u1"); got != "views:u1" {
		t.Fatalf("ViewsKey = %q", got)
	}
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.FixedZone("x", 3600))
	got := Recent(7, at)
	if got["last_view"] != "2026-01-02T02:04:05Z" || got["views"] != int64(7) {
		t.Fatalf("Recent = %v", got)
	}
}
