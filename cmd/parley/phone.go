package main

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/parleyhq/parley/calls"
	"github.com/parleyhq/parley/calls/recstore"
	"github.com/parleyhq/parley/internal/config"
	"github.com/parleyhq/parley/telephony"
)

// recordingsConfig says where and how call recordings are kept.
type recordingsConfig struct {
	Dir                     string
	Format                  string
	SampleRate, OpusBitrate int
	S3                      recstore.S3Config
}

func loadRecordingsConfig(env *config.Env) recordingsConfig {
	var c recordingsConfig
	c.Dir = env.String("PARLEY_RECORDINGS_DIR", "recordings", "directory of call recordings when no S3 store is configured (`parley dev`: under PARLEY_DATA_DIR); API servers and workers must share it")
	c.Format = env.String("PARLEY_RECORDING_FORMAT", calls.FormatOgg, "call recording format: ogg (Opus, about 11 MB per hour) or wav (PCM, about 115 MB per hour at 16 kHz)")
	c.SampleRate = env.Int("PARLEY_RECORDING_SAMPLE_RATE", 16000, "call recording sample rate in Hz")
	c.OpusBitrate = env.Int("PARLEY_RECORDING_OPUS_BITRATE", 24000, "Opus bitrate of ogg recordings in bit/s")
	c.S3 = recstore.S3Config{
		Endpoint:  env.String("PARLEY_S3_ENDPOINT", "", "S3-compatible endpoint for recordings (host[:port] or URL; http:// means no TLS); with PARLEY_S3_BUCKET it replaces the local directory"),
		Bucket:    env.String("PARLEY_S3_BUCKET", "", "bucket of call recordings (must exist)"),
		Region:    env.String("PARLEY_S3_REGION", "", "the bucket's region (empty: asked of the service)"),
		AccessKey: env.String("PARLEY_S3_ACCESS_KEY", "", "S3 access key"),
		SecretKey: env.String("PARLEY_S3_SECRET_KEY", "", "S3 secret key"),
		PathStyle: env.Bool("PARLEY_S3_PATH_STYLE", false, "address the bucket as endpoint/bucket (MinIO and most self-hosted stores)"),
		Prefix:    env.String("PARLEY_S3_PREFIX", "", "key prefix of recordings in the bucket, to share it"),
		Insecure:  env.Bool("PARLEY_S3_INSECURE", false, "plain HTTP to a bare host:port endpoint"),
	}
	return c
}

// newRecordings builds the recordings service on the configured store: S3 when an
// endpoint and bucket are set (checked now, so a wrong bucket fails at start rather
// than at the end of the first call), else the local directory.
func newRecordings(ctx context.Context, c recordingsConfig, svc *calls.Service, publicURL string, log *slog.Logger) (*calls.Recordings, error) {
	var store recstore.Store
	if c.S3.Endpoint != "" || c.S3.Bucket != "" {
		s3, err := recstore.NewS3(c.S3)
		if err != nil {
			return nil, fmt.Errorf("recordings: %w", err)
		}
		cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		defer cancel()
		if err := s3.Check(cctx); err != nil {
			return nil, fmt.Errorf("recordings: S3 bucket %q: %w", c.S3.Bucket, err)
		}
		store = s3
	} else {
		local, err := recstore.NewLocal(c.Dir)
		if err != nil {
			return nil, fmt.Errorf("PARLEY_RECORDINGS_DIR: %w", err)
		}
		store = local
	}
	return calls.NewRecordings(svc, calls.RecordingConfig{Store: store, Format: c.Format, SampleRate: c.SampleRate,
		OpusBitrate: c.OpusBitrate, PublicURL: publicURL, Logger: log})
}

// newTwilio builds the Twilio side of calls when an auth token is configured (nil
// otherwise): the inbound webhook and media streams (API), and dialling Twilio numbers
// (the dial job).
func newTwilio(cfg appConfig, svc *calls.Service, engine *calls.Engine, tel *telephony.Service, recs *calls.Recordings, publicURL string, log *slog.Logger) (*calls.Twilio, error) {
	if cfg.Phone.TwilioAuthToken == "" {
		return nil, nil
	}
	return calls.NewTwilio(svc, engine, tel, calls.TwilioConfig{
		AccountSID: cfg.Phone.TwilioAccountSID, AuthToken: cfg.Phone.TwilioAuthToken, PublicURL: publicURL,
		RingTimeout: cfg.Phone.RingingTimeout, Recordings: recs, Logger: log,
	})
}
