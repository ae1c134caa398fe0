package recstore

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"

	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"
	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	"go.uber.org/goleak"
)

// TestMain checks that no goroutine outlives the tests: an upload or a ranged read
// must not leave a request behind.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeS3 serves the S3 protocol (gofakes3 on an in-memory backend) on a real HTTP
// server and returns a store on a fresh bucket there.
func fakeS3(t *testing.T, prefix string) (*S3, *httptest.Server) {
	t.Helper()
	srv := httptest.NewServer(gofakes3.New(s3mem.New()).Server())
	t.Cleanup(srv.Close)
	const bucket = "recordings"
	// Create the bucket with a plain client, as an operator would.
	admin, err := minio.New(srv.Listener.Addr().String(), &minio.Options{
		Creds: credentials.NewStaticV4("key", "secret", ""), BucketLookup: minio.BucketLookupPath, Region: "us-east-1",
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := admin.MakeBucket(t.Context(), bucket, minio.MakeBucketOptions{Region: "us-east-1"}); err != nil {
		t.Fatal(err)
	}
	s, err := NewS3(S3Config{Endpoint: srv.URL, Bucket: bucket, Region: "us-east-1",
		AccessKey: "key", SecretKey: "secret", PathStyle: true, Prefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Check(t.Context()); err != nil {
		t.Fatal(err)
	}
	return s, srv
}

// roundTrip stores data (of known or unknown size), reads it back whole and from an
// offset, and deletes it.
func roundTrip(t *testing.T, s Store) {
	ctx := t.Context()
	data := make([]byte, 3<<20+12345)
	rand.Read(data)
	for _, c := range []struct {
		key  string
		size int64
		ct   string
	}{{"calls/call_a.ogg", int64(len(data)), "audio/ogg"}, {"calls/call_b.wav", -1, "audio/wav"}} {
		if _, err := s.Open(ctx, c.key); !errors.Is(err, ErrNotFound) {
			t.Fatalf("open before put: %v", err)
		}
		// A plain io.Reader (no Seek, no Len): the store must stream it.
		if err := s.Put(ctx, c.key, io.MultiReader(bytes.NewReader(data)), c.size, c.ct); err != nil {
			t.Fatal(err)
		}
		obj, err := s.Open(ctx, c.key)
		if err != nil {
			t.Fatal(err)
		}
		if obj.Size != int64(len(data)) || obj.ContentType != c.ct || obj.ModTime.IsZero() {
			t.Errorf("%s: size %d, type %q, mtime %v", c.key, obj.Size, obj.ContentType, obj.ModTime)
		}
		got, err := io.ReadAll(obj)
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("%s: read %d bytes (%v), want the %d stored", c.key, len(got), err, len(data))
		}
		// Seek and read a range, as http.ServeContent does for Range requests.
		if _, err := obj.Seek(1<<20, io.SeekStart); err != nil {
			t.Fatal(err)
		}
		part := make([]byte, 1000)
		if _, err := io.ReadFull(obj, part); err != nil || !bytes.Equal(part, data[1<<20:1<<20+1000]) {
			t.Fatalf("%s: ranged read: %v", c.key, err)
		}
		obj.Close()
		if err := s.Delete(ctx, c.key); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Open(ctx, c.key); !errors.Is(err, ErrNotFound) {
			t.Fatalf("open after delete: %v", err)
		}
		if err := s.Delete(ctx, c.key); err != nil {
			t.Fatalf("delete twice: %v", err)
		}
	}
}

func TestLocalRoundTrip(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s, err := NewLocal(filepath.Join(dir, "recordings"))
	if err != nil {
		t.Fatal(err)
	}
	roundTrip(t, s)
}

func TestS3RoundTrip(t *testing.T) {
	t.Parallel()
	s, _ := fakeS3(t, "parley/recordings")
	roundTrip(t, s)
}

// TestS3Prefix: keys land under the configured prefix in the bucket.
func TestS3Prefix(t *testing.T) {
	t.Parallel()
	s, srv := fakeS3(t, "tenant-shared/rec/")
	if err := s.Put(t.Context(), "calls/x.ogg", bytes.NewReader([]byte("OggS")), 4, "audio/ogg"); err != nil {
		t.Fatal(err)
	}
	c, err := minio.New(srv.Listener.Addr().String(), &minio.Options{Creds: credentials.NewStaticV4("key", "secret", ""), BucketLookup: minio.BucketLookupPath, Region: "us-east-1"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.StatObject(t.Context(), "recordings", "tenant-shared/rec/calls/x.ogg", minio.StatObjectOptions{}); err != nil {
		t.Fatalf("object under the prefix: %v", err)
	}
}

// TestLocalFailedPutLeavesNothing: a reader that fails mid-way leaves neither the key
// nor a temporary file.
func TestLocalFailedPutLeavesNothing(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s, err := NewLocal(dir)
	if err != nil {
		t.Fatal(err)
	}
	bad := io.MultiReader(bytes.NewReader(make([]byte, 1000)), errReader{})
	if err := s.Put(context.Background(), "calls/c.ogg", bad, -1, "audio/ogg"); err == nil {
		t.Fatal("put from a failing reader succeeded")
	}
	if _, err := s.Open(t.Context(), "calls/c.ogg"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("open: %v", err)
	}
	left, _ := os.ReadDir(filepath.Join(dir, "calls"))
	if len(left) != 0 {
		t.Fatalf("left behind: %v", left)
	}
}

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, errors.New("disk on fire") }

// TestKeys: keys that could escape the directory, or hide, are refused by every
// backend before any I/O.
func TestKeys(t *testing.T) {
	t.Parallel()
	local, err := NewLocal(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	s3, _ := fakeS3(t, "")
	for _, key := range []string{"", "../x.ogg", "calls/../../etc/passwd", "/abs.ogg", ".hidden", "calls/.tmp-x",
		"a//b", "a/b/", `a\b`, "a b", "calls/x\x00.ogg"} {
		for name, s := range map[string]Store{"local": local, "s3": s3} {
			if err := s.Put(t.Context(), key, bytes.NewReader(nil), 0, ""); err == nil {
				t.Errorf("%s: put %q accepted", name, key)
			}
			if _, err := s.Open(t.Context(), key); err == nil || errors.Is(err, ErrNotFound) {
				t.Errorf("%s: open %q: %v, want an invalid-key error", name, key, err)
			}
		}
	}
	for _, key := range []string{"calls/call_01H.ogg", "x.wav", "a/b/c-d_e.f"} {
		if err := CheckKey(key); err != nil {
			t.Errorf("CheckKey(%q): %v", key, err)
		}
	}
}
