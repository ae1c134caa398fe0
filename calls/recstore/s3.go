package recstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// S3Config configures an S3-compatible store.
type S3Config struct {
	// Endpoint is the service's host[:port] (PARLEY_S3_ENDPOINT), e.g.
	// "s3.eu-west-1.amazonaws.com" or "minio.internal:9000". A URL with a scheme is
	// accepted too; "http://" means no TLS. Required.
	Endpoint string
	// Insecure talks plain HTTP to a bare host:port endpoint (local MinIO).
	Insecure bool
	// Bucket holds the recordings (PARLEY_S3_BUCKET). It must exist. Required.
	Bucket string
	// Region is the bucket's region (PARLEY_S3_REGION). Empty lets the client ask the
	// service; stores with one region (MinIO, R2: "auto") accept anything.
	Region string
	// AccessKey and SecretKey are the credentials (PARLEY_S3_ACCESS_KEY,
	// PARLEY_S3_SECRET_KEY). Both empty: anonymous requests.
	AccessKey, SecretKey string
	// PathStyle addresses the bucket as endpoint/bucket/key rather than
	// bucket.endpoint/key (PARLEY_S3_PATH_STYLE). MinIO and most self-hosted stores
	// need it; AWS prefers virtual-hosted style.
	PathStyle bool
	// Prefix is put before every key ("parley/recordings/"), to share a bucket.
	Prefix string
	// Transport carries the requests; nil uses minio-go's default.
	Transport http.RoundTripper
}

// partSize is the multipart part size for uploads of unknown length. minio-go buffers
// one part in memory; left to itself, for an unknown size it picks parts big enough
// for a 5 TiB object (over 500 MiB each). 8 MiB parts hold a recording of 80 GB in the
// 10,000 parts S3 allows, at 8 MiB of memory per upload.
const partSize = 8 << 20

// S3 keeps recordings as objects in an S3-compatible bucket.
type S3 struct {
	client *minio.Client
	bucket string
	prefix string
}

// NewS3 returns a store on cfg's bucket. It does not contact the service; Check does.
func NewS3(cfg S3Config) (*S3, error) {
	if cfg.Endpoint == "" || cfg.Bucket == "" {
		return nil, errors.New("recstore: s3: endpoint and bucket are required")
	}
	host, secure := cfg.Endpoint, !cfg.Insecure
	if strings.Contains(host, "://") {
		u, err := url.Parse(host)
		if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
			return nil, fmt.Errorf("recstore: s3: endpoint %q: want host[:port] or an http(s) URL", cfg.Endpoint)
		}
		if u.Path != "" && u.Path != "/" {
			return nil, fmt.Errorf("recstore: s3: endpoint %q: a path is not allowed", cfg.Endpoint)
		}
		host, secure = u.Host, u.Scheme == "https"
	}
	if cfg.Prefix != "" {
		if err := CheckKey(strings.TrimSuffix(cfg.Prefix, "/")); err != nil {
			return nil, fmt.Errorf("recstore: s3: prefix %q: %w", cfg.Prefix, err)
		}
		if !strings.HasSuffix(cfg.Prefix, "/") {
			cfg.Prefix += "/"
		}
	}
	opts := &minio.Options{
		Creds:     credentials.NewStaticV4(cfg.AccessKey, cfg.SecretKey, ""),
		Secure:    secure,
		Region:    cfg.Region,
		Transport: cfg.Transport,
	}
	if cfg.PathStyle {
		opts.BucketLookup = minio.BucketLookupPath
	}
	c, err := minio.New(host, opts)
	if err != nil {
		return nil, fmt.Errorf("recstore: s3: %w", err)
	}
	return &S3{client: c, bucket: cfg.Bucket, prefix: cfg.Prefix}, nil
}

// Check asks the service whether the bucket exists and the credentials may see it: a
// start-up check, so a misconfigured store fails at boot rather than at the end of the
// first call.
func (s *S3) Check(ctx context.Context) error {
	ok, err := s.client.BucketExists(ctx, s.bucket)
	if err != nil {
		return fmt.Errorf("recstore: s3: bucket %s: %w", s.bucket, err)
	}
	if !ok {
		return fmt.Errorf("recstore: s3: bucket %s does not exist", s.bucket)
	}
	return nil
}

// Put uploads r: in one request when size is known and small, in multipart parts of
// partSize otherwise, streaming either way.
func (s *S3) Put(ctx context.Context, key string, r io.Reader, size int64, contentType string) error {
	if err := CheckKey(key); err != nil {
		return err
	}
	opts := minio.PutObjectOptions{ContentType: contentType}
	if size < 0 {
		opts.PartSize = partSize
		// Parts go with Content-MD5 and an unsigned payload rather than minio-go's
		// aws-chunked streaming signature over plain HTTP: not every S3-compatible
		// store decodes aws-chunked bodies on UploadPart (gofakes3 stores the chunk
		// framing as data), and every one checks Content-MD5.
		opts.DisableContentSha256 = true
		opts.SendContentMd5 = true
	}
	if _, err := s.client.PutObject(ctx, s.bucket, s.prefix+key, r, size, opts); err != nil {
		return fmt.Errorf("recstore: s3: put %s: %w", key, err)
	}
	return nil
}

// Open stats the object and returns it. Reads are lazy: the first Read (after any
// Seek) issues one GET from that offset, so a Range request fetches only its range.
func (s *S3) Open(ctx context.Context, key string) (*Object, error) {
	if err := CheckKey(key); err != nil {
		return nil, err
	}
	obj, err := s.client.GetObject(ctx, s.bucket, s.prefix+key, minio.GetObjectOptions{})
	if err != nil {
		return nil, fmt.Errorf("recstore: s3: open %s: %w", key, err)
	}
	st, err := obj.Stat()
	if err != nil {
		obj.Close()
		if isNotFound(err) {
			return nil, ErrNotFound
		}
		return nil, fmt.Errorf("recstore: s3: open %s: %w", key, err)
	}
	ct := st.ContentType
	if ct == "" || ct == "binary/octet-stream" {
		ct = ContentType(key)
	}
	return &Object{ReadSeekCloser: obj, Size: st.Size, ModTime: st.LastModified, ContentType: ct}, nil
}

// Delete removes the object.
func (s *S3) Delete(ctx context.Context, key string) error {
	if err := CheckKey(key); err != nil {
		return err
	}
	if err := s.client.RemoveObject(ctx, s.bucket, s.prefix+key, minio.RemoveObjectOptions{}); err != nil && !isNotFound(err) {
		return fmt.Errorf("recstore: s3: delete %s: %w", key, err)
	}
	return nil
}

func isNotFound(err error) bool {
	r := minio.ToErrorResponse(err)
	return r.Code == "NoSuchKey" || r.StatusCode == http.StatusNotFound
}
