// Package web holds Parley's browser assets: their sources (call/, and later the
// dashboard and the widget) and the built files in dist/, embedded in the binary.
//
// dist/ is committed so that `go build` works from a fresh clone without Node; `npm
// ci && npm run build` in this directory regenerates it, and the web test checks the
// committed files match their sources' build.
package web

import (
	"embed"
	"io/fs"
)

//go:embed dist
var dist embed.FS

// Dist is the built assets: call.html (the test-call page) and call.js.
func Dist() fs.FS {
	sub, err := fs.Sub(dist, "dist")
	if err != nil {
		panic(err) // the directory is embedded above; it cannot be missing
	}
	return sub
}
