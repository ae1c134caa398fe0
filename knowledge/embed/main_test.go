package embed

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package if a test leaves goroutines behind: the OpenAI embedder runs
// batches in goroutines and its tests run HTTP servers and clients.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
