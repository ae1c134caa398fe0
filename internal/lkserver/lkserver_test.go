package lkserver_test

import (
	"context"
	"os"
	"testing"

	"github.com/parleyhq/parley/internal/lkserver"
)

// Two managed servers run side by side on their own ports and both answer.
func TestStartSideBySide(t *testing.T) {
	if _, err := lkserver.FindBinary(); err != nil && os.Getenv("CI") == "" {
		t.Skip(err)
	}
	ctx := context.Background()
	a, err := lkserver.Start(ctx, lkserver.Config{WorkDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Stop()
	b, err := lkserver.Start(ctx, lkserver.Config{WorkDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Stop()
	if a.URL() == b.URL() {
		t.Fatalf("both servers on %s", a.URL())
	}
	for _, s := range []*lkserver.Server{a, b} {
		if err := s.Ping(ctx); err != nil {
			t.Fatal(err)
		}
	}
	a.Stop()
	a.Stop() // safe twice
	if err := a.Ping(ctx); err == nil {
		t.Fatal("stopped server still answers")
	}
}
