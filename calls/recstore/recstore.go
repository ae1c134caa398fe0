// Package recstore stores call recordings: a Store interface with two backends, the
// local filesystem (the default: files under a data directory) and any S3-compatible
// object store (AWS S3, MinIO, Cloudflare R2, Backblaze B2, …) through minio-go.
//
// A Store only moves bytes under keys. It knows nothing of tenants: package calls
// derives keys from call IDs, keeps them in the calls table and checks the tenant
// before it opens one, so a key never comes from a request.
package recstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strings"
	"time"
)

// Store keeps recordings under keys. Implementations are safe for concurrent use.
type Store interface {
	// Put stores the bytes of r under key, replacing any object already there. size is
	// r's length, or -1 when unknown. A reader that fails leaves no object behind.
	Put(ctx context.Context, key string, r io.Reader, size int64, contentType string) error
	// Open returns the object under key for reading. ErrNotFound when there is none.
	Open(ctx context.Context, key string) (*Object, error)
	// Delete removes the object under key; deleting a missing key is not an error.
	Delete(ctx context.Context, key string) error
}

// Object is a stored recording being read. Its ReadSeeker serves byte ranges (a file,
// or an S3 object that issues ranged GETs as it is sought), so http.ServeContent can
// answer Range requests from either backend. Close it when done.
type Object struct {
	io.ReadSeekCloser
	// Size is the object's length in bytes.
	Size int64
	// ModTime is when it was stored.
	ModTime time.Time
	// ContentType is what Put was given (the local backend derives it from the key's
	// extension, as it keeps no metadata).
	ContentType string
}

// ErrNotFound: no object under the key.
var ErrNotFound = errors.New("recstore: not found")

// keyPattern is what a key may look like: slash-separated segments of letters, digits,
// '.', '_' and '-', none starting with a dot. Every backend checks it, so a key can
// neither climb out of the local root ("..") nor hide as a dotfile, and reads the same
// on any filesystem and any S3 implementation.
var keyPattern = regexp.MustCompile(`^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}(/[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}){0,7}$`)

// CheckKey reports whether key is a valid store key (see keyPattern).
func CheckKey(key string) error {
	if !keyPattern.MatchString(key) || strings.Contains(key, "..") {
		return fmt.Errorf("recstore: invalid key %q", key)
	}
	return nil
}

// ContentType is the media type of a recording, from its key's extension.
func ContentType(key string) string {
	switch {
	case strings.HasSuffix(key, ".ogg"), strings.HasSuffix(key, ".opus"):
		return "audio/ogg"
	case strings.HasSuffix(key, ".wav"):
		return "audio/wav"
	}
	return "application/octet-stream"
}
