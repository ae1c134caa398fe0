package web

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// The committed build must be the build of the committed sources: a change to
// call/main.ts without `npm run build` would otherwise ship the old page.
func TestDistIsBuiltFromSources(t *testing.T) {
	esbuild := filepath.Join("node_modules", ".bin", "esbuild")
	if _, err := os.Stat(esbuild); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("esbuild missing (scripts/setup runs npm ci in web/): %v", err)
		}
		t.Skip("web/node_modules not installed")
	}
	out := filepath.Join(t.TempDir(), "call.js")
	// The flags of package.json's build script.
	cmd := exec.Command(esbuild, "call/main.ts", "--bundle", "--minify", "--format=esm", "--target=es2020",
		"--outfile="+out, "--legal-comments=none", "--log-level=warning")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("esbuild: %v\n%s", err, b)
	}
	for _, c := range []struct{ built, committed string }{{out, "dist/call.js"}, {"call/index.html", "dist/call.html"}} {
		want, err := os.ReadFile(c.built)
		if err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(c.committed)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s is not the build of its sources: run `npm run build` in web/ and commit dist/", c.committed)
		}
	}
}
