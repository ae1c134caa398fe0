package recstore

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
)

// Local keeps recordings as files under a directory (PARLEY_RECORDINGS_DIR). Keys map
// to paths below it; every access goes through an os.Root, so even a key that passed
// CheckKey cannot reach outside the directory through a symlink.
type Local struct {
	dir string
}

// NewLocal returns a store under dir, creating the directory (0o750: recordings are
// personal data, not for other users of the machine) if it does not exist.
func NewLocal(dir string) (*Local, error) {
	if dir == "" {
		return nil, errors.New("recstore: local: empty directory")
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("recstore: local: %w", err)
	}
	return &Local{dir: dir}, nil
}

// Dir is the store's directory.
func (l *Local) Dir() string { return l.dir }

func (l *Local) root() (*os.Root, error) {
	r, err := os.OpenRoot(l.dir)
	if err != nil {
		return nil, fmt.Errorf("recstore: local: %w", err)
	}
	return r, nil
}

// Put writes r to a temporary file beside the key's path and renames it into place, so
// a reader never sees half a recording and a failed Put leaves nothing behind.
func (l *Local) Put(ctx context.Context, key string, r io.Reader, size int64, contentType string) (err error) {
	if err := CheckKey(key); err != nil {
		return err
	}
	root, err := l.root()
	if err != nil {
		return err
	}
	defer root.Close()
	if dir := path.Dir(key); dir != "." {
		if err := root.MkdirAll(dir, 0o750); err != nil {
			return fmt.Errorf("recstore: local: put %s: %w", key, err)
		}
	}
	var rnd [6]byte
	rand.Read(rnd[:])
	// A dot-name: CheckKey refuses such keys, so a temporary file never collides with,
	// or is served as, a recording.
	tmp := path.Join(path.Dir(key), ".tmp-"+hex.EncodeToString(rnd[:])+"-"+path.Base(key))
	f, err := root.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o640)
	if err != nil {
		return fmt.Errorf("recstore: local: put %s: %w", key, err)
	}
	defer func() {
		if err != nil {
			f.Close()
			root.Remove(tmp)
		}
	}()
	n, err := io.Copy(f, ctxReader{ctx, r})
	if err != nil {
		return fmt.Errorf("recstore: local: put %s: %w", key, err)
	}
	if size >= 0 && n != size {
		return fmt.Errorf("recstore: local: put %s: read %d bytes, want %d", key, n, size)
	}
	// Sync before the rename: after a crash the name must not point at a file whose
	// data never reached the disk.
	if err = f.Sync(); err != nil {
		return fmt.Errorf("recstore: local: put %s: %w", key, err)
	}
	if err = f.Close(); err != nil {
		return fmt.Errorf("recstore: local: put %s: %w", key, err)
	}
	if err = root.Rename(tmp, key); err != nil {
		return fmt.Errorf("recstore: local: put %s: %w", key, err)
	}
	return nil
}

// Open opens the file under key.
func (l *Local) Open(ctx context.Context, key string) (*Object, error) {
	if err := CheckKey(key); err != nil {
		return nil, err
	}
	root, err := l.root()
	if err != nil {
		return nil, err
	}
	defer root.Close() // an open file outlives its root
	f, err := root.Open(key)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("recstore: local: open %s: %w", key, err)
	}
	st, err := f.Stat()
	if err != nil || !st.Mode().IsRegular() {
		f.Close()
		if err == nil {
			return nil, ErrNotFound
		}
		return nil, fmt.Errorf("recstore: local: open %s: %w", key, err)
	}
	return &Object{ReadSeekCloser: f, Size: st.Size(), ModTime: st.ModTime(), ContentType: ContentType(key)}, nil
}

// Delete removes the file under key.
func (l *Local) Delete(ctx context.Context, key string) error {
	if err := CheckKey(key); err != nil {
		return err
	}
	root, err := l.root()
	if err != nil {
		return err
	}
	defer root.Close()
	if err := root.Remove(key); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("recstore: local: delete %s: %w", key, err)
	}
	return nil
}

// ctxReader stops a copy when ctx ends.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
