package logic

import "testing"

func TestSummaryNamesTheActionTheIDAndTheRun(t *testing.T) {
	if got := Summary("remind", "u1", 2); got != "remind for u1: run 2" {
		t.Fatalf("Summary = %q", got)
	}
}
