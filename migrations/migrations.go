// Package migrations holds Parley's numbered SQL migrations, embedded into the binary.
// Files are NNNN_name.up.sql and NNNN_name.down.sql; internal/db applies them in order.
package migrations

import "embed"

// FS holds every migration file.
//
//go:embed *.sql
var FS embed.FS
