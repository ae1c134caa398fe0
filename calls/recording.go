package calls

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	libopus "gopkg.in/hraban/opus.v2"

	"github.com/parleyhq/parley/calls/recstore"
	"github.com/parleyhq/parley/internal/errs"
	"github.com/parleyhq/parley/voice"
	"github.com/parleyhq/parley/voice/audio"
)

// Recording formats (RecordingConfig.Format, PARLEY_RECORDING_FORMAT).
const (
	// FormatOgg is Opus in an Ogg container (RFC 7845), audio/ogg: about 3 KB a second
	// at the default 24 kbit/s, a tenth of WAV, and playable in every browser. It costs
	// CPU: measured on the 2-core development VM, a minute of call takes 220 ms of CPU
	// to mix and encode (0.4% of a core per live call), 180 ms of it Opus.
	FormatOgg = "ogg"
	// FormatWAV is 16-bit PCM WAV, audio/wav: 32 KB a second at 16 kHz, for tools that
	// want raw samples, or for workers packed with calls: mixing alone takes 40 ms of
	// CPU per minute of call.
	FormatWAV = "wav"
)

// RecordingConfig configures call recordings.
type RecordingConfig struct {
	// Store keeps the finished files: a recstore.Local (PARLEY_RECORDINGS_DIR) or a
	// recstore.S3. Required.
	Store recstore.Store
	// Format is FormatOgg (default) or FormatWAV.
	Format string
	// SampleRate of the recording. Default 16 kHz: wideband, what the engine's
	// recogniser hears, and twice a telephone's band; WebRTC callers' 48 kHz adds
	// nothing a listener of a call needs. For Ogg it must be one Opus takes (8, 12, 16,
	// 24 or 48 kHz).
	SampleRate int
	// OpusBitrate in bit/s for Ogg. Default 24000: libopus codes 16 kHz speech as
	// wideband SILK at that rate, transparent for speech, at 180 KB a minute.
	OpusBitrate int
	// TempDir holds recordings in progress (default os.TempDir()). A call's audio is
	// streamed here as it happens, so memory stays bounded whatever the call's length;
	// the file is moved to the Store when the call ends.
	TempDir string
	// PublicURL is Parley's external base URL (PARLEY_PUBLIC_URL): recording_url
	// becomes PublicURL + "/v1/calls/{id}/recording". Empty stores the path alone.
	PublicURL string
	Logger    *slog.Logger
}

const (
	defaultRecordingRate = 16000
	defaultOpusBitrate   = 24000
	// recordingOpusComplexity: the CPU budget of a worker is per call (see
	// audio.OpusEncoderConfig); at 1, libopus codes wideband SILK at about a third of
	// the cost of complexity 5, and a recording is listened to far less than the
	// call's own audio, which already runs at 1.
	recordingOpusComplexity = 1
)

func (c *RecordingConfig) setDefaults() {
	if c.Format == "" {
		c.Format = FormatOgg
	}
	if c.SampleRate == 0 {
		c.SampleRate = defaultRecordingRate
	}
	if c.OpusBitrate == 0 {
		c.OpusBitrate = defaultOpusBitrate
	}
	if c.TempDir == "" {
		c.TempDir = os.TempDir()
	}
	c.PublicURL = strings.TrimRight(c.PublicURL, "/")
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

func (c *RecordingConfig) validate() error {
	var errList []error
	if c.Store == nil {
		errList = append(errList, errors.New("calls: recordings: a Store is required"))
	}
	switch c.Format {
	case FormatOgg:
		switch c.SampleRate {
		case 8000, 12000, 16000, 24000, 48000:
		default:
			errList = append(errList, fmt.Errorf("calls: recordings: sample rate %d Hz: Opus takes 8000, 12000, 16000, 24000 or 48000", c.SampleRate))
		}
		if c.OpusBitrate < 6000 || c.OpusBitrate > 510000 {
			errList = append(errList, fmt.Errorf("calls: recordings: Opus bitrate %d: want 6000..510000", c.OpusBitrate))
		}
	case FormatWAV:
		if c.SampleRate < 8000 || c.SampleRate > 48000 || c.SampleRate%50 != 0 {
			errList = append(errList, fmt.Errorf("calls: recordings: sample rate %d Hz: want 8000..48000 with whole 20 ms frames", c.SampleRate))
		}
	default:
		errList = append(errList, fmt.Errorf("calls: recordings: format %q: want %q or %q", c.Format, FormatOgg, FormatWAV))
	}
	return errors.Join(errList...)
}

// ErrRecordingNotFound: the call has no recording (recording was off for its agent,
// the call is still live, or nothing was recorded).
var ErrRecordingNotFound = errs.NotFound("recording_not_found", "This call has no recording")

// Recordings records calls: it mixes both sides of a call into one track, streams it
// to a temporary file as the call goes, stores the file when the call ends and serves
// it to the call's tenant. Safe for concurrent use; one CallRecording per call.
type Recordings struct {
	calls *Service
	cfg   RecordingConfig
}

// NewRecordings returns the recordings of svc's calls.
func NewRecordings(svc *Service, cfg RecordingConfig) (*Recordings, error) {
	if svc == nil {
		return nil, errors.New("calls: recordings: nil Service")
	}
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return &Recordings{calls: svc, cfg: cfg}, nil
}

// RecordingPath is the API path of a call's recording, what recording_url points at.
func RecordingPath(callID string) string { return "/v1/calls/" + callID + "/recording" }

// callIDPattern is what a call ID must look like to become part of a storage key: the
// IDs ids.New makes, and nothing that could carry a path.
var callIDPattern = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// key is where a call's recording is stored: sharded by day, so a local directory
// never grows to millions of entries and old recordings are easy to expire by prefix.
// Built from the call ID and the start date only, never from a request.
func (r *Recordings) key(callID string, at time.Time) (string, error) {
	if !callIDPattern.MatchString(callID) {
		return "", fmt.Errorf("calls: recordings: call ID %q cannot name a file", callID)
	}
	return at.UTC().Format("2006/01/02/") + callID + "." + r.cfg.Format, nil
}

// Open returns the recording of one of tenantID's calls, for streaming to its owner.
// Another tenant's call is ErrNotFound, as is a call that does not exist; a call with
// no recording, or still live, is ErrRecordingNotFound. The caller closes the object.
func (r *Recordings) Open(ctx context.Context, tenantID, callID string) (*recstore.Object, error) {
	var key, status string
	err := r.calls.pool.QueryRow(ctx, `SELECT recording_key, call_status FROM calls WHERE tenant_id = $1 AND id = $2`,
		tenantID, callID).Scan(&key, &status)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("calls: recording of %s: %w", callID, err)
	}
	if key == "" || isLive(status) {
		return nil, ErrRecordingNotFound
	}
	obj, err := r.cfg.Store.Open(ctx, key)
	if errors.Is(err, recstore.ErrNotFound) {
		// The row names a file the store no longer has (expired by a lifecycle rule,
		// deleted by hand): for the client, there is no recording.
		return nil, ErrRecordingNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("calls: recording of %s: %w", callID, err)
	}
	return obj, nil
}

// Prepare readies the recording of a call: a temporary file and an encoder, nothing
// running yet. Its CallRecording is the session's voice.AudioTap (Config.Tap); Begin
// starts its timeline when the conversation starts, Finish stores it, Discard drops
// it. Prepare on a nil *Recordings returns nil: recordings are not configured.
func (r *Recordings) Prepare(callID string) (*CallRecording, error) {
	if r == nil {
		return nil, nil
	}
	if !callIDPattern.MatchString(callID) {
		return nil, fmt.Errorf("calls: recordings: call ID %q cannot name a file", callID)
	}
	f, err := os.CreateTemp(r.cfg.TempDir, tempPrefix+callID+"-*."+r.cfg.Format)
	if err != nil {
		return nil, fmt.Errorf("calls: recording %s: %w", callID, err)
	}
	c := &CallRecording{r: r, callID: callID, file: f, frames: make(chan tapFrame, tapQueue),
		done: make(chan struct{}), log: r.cfg.Logger.With("call_id", callID)}
	switch r.cfg.Format {
	case FormatWAV:
		c.enc, err = newWAVSink(f, r.cfg.SampleRate)
	default:
		c.enc, err = newOggOpusWriter(f, r.cfg.SampleRate, r.cfg.OpusBitrate)
	}
	if err != nil {
		f.Close()
		os.Remove(f.Name())
		return nil, fmt.Errorf("calls: recording %s: %w", callID, err)
	}
	return c, nil
}

// tempPrefix names recordings in progress in RecordingConfig.TempDir.
const tempPrefix = "parley-rec-"

// SweepTemp deletes recordings in progress that a worker left behind when it died
// mid-call (FailOrphans fails those calls; their audio is lost), if older than
// olderThan. Call it when a worker starts, with olderThan above the longest call a
// worker on the same machine could still be recording (agents' maximum call duration
// defaults to an hour). It returns how many files it removed.
func (r *Recordings) SweepTemp(olderThan time.Duration) (int, error) {
	entries, err := os.ReadDir(r.cfg.TempDir)
	if err != nil {
		return 0, fmt.Errorf("calls: recordings: sweep: %w", err)
	}
	n := 0
	for _, e := range entries {
		if !e.Type().IsRegular() || !strings.HasPrefix(e.Name(), tempPrefix) {
			continue
		}
		info, err := e.Info()
		if err != nil || time.Since(info.ModTime()) < olderThan {
			continue
		}
		if err := os.Remove(filepath.Join(r.cfg.TempDir, e.Name())); err == nil {
			n++
		}
	}
	return n, nil
}

// tapQueue is how many frames wait between the engine's audio paths and the mixer's
// goroutine: 2 s of both sides at 50 frames a second each. The mixer takes a frame in
// tens of microseconds; only a disk stalled for seconds fills this, and then frames
// are dropped (and counted) rather than hold up the call's audio.
const tapQueue = 200

// tapFrame is a copy of one frame the tap was given.
type tapFrame struct {
	agent bool
	at    time.Time // when an agent frame was written to the transport
	rate  int
	buf   *[]int16
}

var framePool = sync.Pool{New: func() any { b := make([]int16, 0, 960); return &b }}

// CallRecording is one call's recording in progress: the voice.AudioTap the session
// writes to, a goroutine that mixes and encodes what it gets into a temporary file,
// and, at the end, the upload to the store.
type CallRecording struct {
	r      *Recordings
	callID string
	file   *os.File
	enc    sink
	log    *slog.Logger

	mu      sync.Mutex
	began   time.Time
	mix     *mixer
	closed  bool // no more frames are taken
	frames  chan tapFrame
	done    chan struct{}
	dropped int
	failed  error // the first write error; the mixer stops on it
}

var _ voice.AudioTap = (*CallRecording)(nil)

// Begin starts the recording's timeline at t, when the conversation starts: caller
// audio is laid from t on, agent audio at the time it is written. Frames before Begin
// are dropped. Begin on a nil recording does nothing, so a runner need not check.
func (c *CallRecording) Begin(t time.Time) {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.mix != nil || c.closed {
		return
	}
	m, err := newMixer(c.r.cfg.SampleRate, t, c.enc)
	if err != nil {
		c.failed = err
		return
	}
	c.began, c.mix = t, m
	go c.run()
}

// CallerAudio implements voice.AudioTap.
func (c *CallRecording) CallerAudio(f audio.Frame) { c.take(f, false) }

// AgentAudio implements voice.AudioTap.
func (c *CallRecording) AgentAudio(f audio.Frame) { c.take(f, true) }

// take copies f onto the queue, never blocking the engine.
func (c *CallRecording) take(f audio.Frame, agent bool) {
	if len(f.Samples) == 0 {
		return
	}
	now := time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.mix == nil || c.closed {
		return
	}
	buf := framePool.Get().(*[]int16)
	*buf = append((*buf)[:0], f.Samples...)
	select {
	case c.frames <- tapFrame{agent: agent, at: now, rate: f.Rate, buf: buf}:
	default:
		c.dropped++
		framePool.Put(buf)
	}
}

// mixTick is how often the mixer commits settled audio to the encoder when frames are
// not arriving by themselves (a caller's silence still arrives; this is for a stalled
// transport).
const mixTick = 200 * time.Millisecond

// run is the mixer's goroutine: it takes frames in arrival order and commits settled
// audio as time passes. It ends when Finish closes the queue.
func (c *CallRecording) run() {
	defer close(c.done)
	t := time.NewTicker(mixTick)
	defer t.Stop()
	var err error
	for {
		select {
		case fr, ok := <-c.frames:
			if !ok {
				if err != nil {
					c.mu.Lock()
					c.failed = err
					c.mu.Unlock()
				}
				return
			}
			if err == nil {
				f := audio.Frame{Samples: *fr.buf, Rate: fr.rate}
				if fr.agent {
					err = c.mix.addAgent(f, fr.at)
				} else {
					err = c.mix.addCaller(f, fr.at)
				}
				if err == nil {
					err = c.mix.advance(time.Now())
				}
			}
			framePool.Put(fr.buf)
		case now := <-t.C:
			if err == nil {
				err = c.mix.advance(now)
			}
		}
	}
}

// stop closes the queue and waits for the mixer goroutine. It reports whether the
// recording had begun.
func (c *CallRecording) stop() bool {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return c.mix != nil
	}
	c.closed = true
	began := c.mix != nil
	if began {
		close(c.frames)
	}
	c.mu.Unlock()
	if began {
		<-c.done
	}
	return began
}

// Discard stops the recording and deletes its temporary file, storing nothing. It is
// safe after Finish (it does nothing then) and on a nil recording.
func (c *CallRecording) Discard() {
	if c == nil {
		return
	}
	c.stop()
	c.mu.Lock()
	f := c.file
	c.file = nil
	c.mu.Unlock()
	if f != nil {
		f.Close()
		os.Remove(f.Name())
	}
}

// Finish ends the recording: it mixes what is left, finishes the file, stores it and
// records its key and URL on the call. It returns the recording_url. A recording that
// never began (the conversation never started) stores nothing and returns
// ErrRecordingNotFound. The temporary file is removed either way. ctx bounds the
// upload: pass one that survives the call's own (context.WithoutCancel).
func (c *CallRecording) Finish(ctx context.Context) (string, error) {
	if c == nil {
		return "", ErrRecordingNotFound
	}
	defer c.Discard()
	if !c.stop() {
		return "", ErrRecordingNotFound
	}
	c.mu.Lock()
	f, failed, dropped := c.file, c.failed, c.dropped
	c.file = nil
	c.mu.Unlock()
	if f == nil {
		return "", errors.New("calls: recording: already finished")
	}
	defer func() {
		f.Close()
		os.Remove(f.Name())
	}()
	if dropped > 0 {
		c.log.Warn("calls: recording dropped frames: the mixer fell behind", "frames", dropped)
	}
	if failed != nil {
		return "", fmt.Errorf("calls: recording %s: %w", c.callID, failed)
	}
	if err := c.mix.close(); err != nil {
		return "", fmt.Errorf("calls: recording %s: %w", c.callID, err)
	}
	if err := c.enc.Close(); err != nil {
		return "", fmt.Errorf("calls: recording %s: %w", c.callID, err)
	}
	size, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return "", fmt.Errorf("calls: recording %s: %w", c.callID, err)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return "", fmt.Errorf("calls: recording %s: %w", c.callID, err)
	}
	key, err := c.r.key(c.callID, c.began)
	if err != nil {
		return "", err
	}
	if err := c.r.cfg.Store.Put(ctx, key, f, size, recstore.ContentType(key)); err != nil {
		return "", fmt.Errorf("calls: recording %s: %w", c.callID, err)
	}
	url := c.r.cfg.PublicURL + RecordingPath(c.callID)
	if _, err := c.r.calls.pool.Exec(ctx, `UPDATE calls SET recording_key = $2, recording_url = $3, updated_at = $4 WHERE id = $1`,
		c.callID, key, url, c.r.calls.now()); err != nil {
		return "", fmt.Errorf("calls: recording %s: save key: %w", c.callID, err)
	}
	c.log.Info("calls: recording stored", "key", key, "bytes", size, "audio", c.mix.duration().Round(time.Millisecond))
	return url, nil
}

// prepareRecording readies the recording of a call the Runner is about to run: nil
// when recordings are not configured. It is the session's tap from the start; the
// agent's recording_enabled is checked once the call has begun (beginRecording), when
// every kind of call (web, outbound, inbound) has its record. A recording that cannot
// be prepared (a full temporary disk) is logged and the call goes on unrecorded:
// losing the recording is better than losing the call.
func (r *Runner) prepareRecording(callID string, log *slog.Logger) *CallRecording {
	rec, err := r.Recordings.Prepare(callID)
	if err != nil {
		log.Warn("calls: recording: not recording", "err", err)
		return nil
	}
	return rec
}

// beginRecording starts rec's timeline at the start of the conversation, or discards
// it when the call's agent has recording_enabled off.
func (r *Runner) beginRecording(ctx context.Context, rec *CallRecording, callID string, at time.Time, log *slog.Logger) {
	if rec == nil {
		return
	}
	c, err := r.Calls.load(ctx, callID)
	if err != nil {
		log.Warn("calls: recording: load call; not recording", "err", err)
		rec.Discard()
		return
	}
	a, err := r.Engine.Agents.Resolve(ctx, c.TenantID, c.AgentID)
	if err != nil {
		log.Warn("calls: recording: resolve agent; not recording", "err", err)
		rec.Discard()
		return
	}
	if !a.RecordingEnabled {
		rec.Discard()
		return
	}
	rec.Begin(at)
}

// storeTimeout bounds storing a recording, which the call's completion waits for: an
// hour of Ogg is about 11 MB, of 16 kHz WAV 115 MB, minutes even on a slow link to an
// object store. A store that takes longer is down, and the call must still complete.
const storeTimeout = 5 * time.Minute

// finishRecording stores the call's recording, logging a failure: the call's record
// is finished regardless.
func finishRecording(ctx context.Context, rec *CallRecording, log *slog.Logger) {
	if rec == nil {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, storeTimeout)
	defer cancel()
	if _, err := rec.Finish(ctx); err != nil && !errors.Is(err, ErrRecordingNotFound) {
		log.Warn("calls: recording not stored", "err", err)
	}
}

// --- mixing ---

// sink is an encoder at the recording's rate.
type sink interface {
	audio.Writer
	io.Closer
}

// Mixer timing; see mixer.
const (
	// mixWindow is how much audio the mixer holds before it is encoded. It bounds
	// memory (two 4 s rings of int16 at 16 kHz are 256 KB a call) and how late a frame
	// may arrive and still be mixed in.
	mixWindow = 4 * time.Second
	// mixSettle is how far behind both the caller's timeline and the wall clock audio
	// must be before it is final: an agent frame waits in the tap queue, the caller's
	// audio comes in 20-60 ms bursts, and a network stall's late audio is moved back
	// over the silence fed in its place (see addCaller); half a second covers these
	// with room to spare.
	mixSettle = 500 * time.Millisecond
	// agentGap: an agent frame that comes more than this after where the previous one
	// ended starts a new stretch of speech at its own time. The playout writes a frame
	// every 20 ms; a later one means the agent stopped talking and has started again
	// (or the worker stalled, and the audio really did go out late). Below it, jitter
	// of the playout's ticks is ignored and speech stays contiguous.
	agentGap = 60 * time.Millisecond
	// callerAhead is how far the end of the caller's audio may run ahead of the clock
	// at its arrival before addCaller moves it back: one frame. Audio cannot arrive
	// before it is said, so beyond that the timeline holds silence fed in place of
	// audio that came late.
	callerAhead = 20 * time.Millisecond
)

// mixer lays both sides of a call on one timeline at the recording's rate and sums
// them. The timeline is the wall clock from t0.
//
// The caller's audio comes through voice.ClockedInput, which keeps it continuous (it
// fills silence for whatever the network did not deliver): sample n of the caller is
// at n/rate, give or take the network stalls addCaller corrects for. The agent's audio
// exists only while the agent speaks; each frame is laid at the time it was written to
// the transport, and frames that follow on within agentGap are kept contiguous, so
// scheduling jitter neither gaps nor overlaps speech.
//
// Each side accumulates in its own ring of mixWindow (so the caller's side can be
// shifted without moving the agent's); settled audio (mixSettle behind both the
// caller's timeline and the clock) is summed and goes to the encoder, so memory is
// bounded whatever the call's length.
type mixer struct {
	rate int
	t0   time.Time
	out  audio.Writer

	// callerRing[i%len] and agentRing[i%len] hold sample i of each side, for
	// base <= i < base+len.
	callerRing, agentRing []int16
	base                  int64   // samples before base are encoded
	hi                    int64   // end of what has been written, either side
	buf                   []int16 // encoder scratch

	caller stream
	agent  stream
	// agentEnd is where the agent's current stretch of speech ends on the input side
	// (in recording samples): where the next frame goes if it follows on.
	agentEnd  int64
	agentLive bool
	// silStart and silEnd bound the caller's latest run of digital silence on the
	// timeline, which late audio may be moved back over.
	silStart, silEnd int64
}

// stream is one side's resampler to the recording's rate and where its output goes.
type stream struct {
	res  *audio.Resampler
	in   int     // the resampler's input rate
	pos  int64   // where the resampler's next output sample lands
	ring []int16 // the side's ring
}

func newMixer(rate int, t0 time.Time, out audio.Writer) (*mixer, error) {
	if rate <= 0 || out == nil {
		return nil, errors.New("calls: mixer: bad rate or output")
	}
	n := int(int64(rate) * int64(mixWindow) / int64(time.Second))
	m := &mixer{rate: rate, t0: t0, out: out, callerRing: make([]int16, n), agentRing: make([]int16, n),
		buf: make([]int16, 0, rate/10)}
	m.caller.ring, m.agent.ring = m.callerRing, m.agentRing
	// Until the caller's first digital silence, the time before t0 is the run late
	// audio may be moved back over (see pullCallerBack).
	m.silStart = math.MinInt64 / 2
	return m, nil
}

// at is the timeline position of wall time t.
func (m *mixer) at(t time.Time) int64 {
	d := t.Sub(m.t0)
	if d < 0 {
		return 0
	}
	return int64(d) * int64(m.rate) / int64(time.Second)
}

// duration is the length of the mixed timeline so far.
func (m *mixer) duration() time.Duration {
	return time.Duration(m.hi) * time.Second / time.Duration(m.rate)
}

// samples is d at the recording's rate.
func (m *mixer) samples(d time.Duration) int64 { return int64(d) * int64(m.rate) / int64(time.Second) }

// resampler returns s's resampler for input at rate, flushing a previous one for
// another rate (a codec change mid-call).
func (m *mixer) resampler(s *stream, rate int) (*audio.Resampler, error) {
	if s.res != nil && s.in == rate {
		return s.res, nil
	}
	if s.res != nil {
		if err := s.res.Flush(); err != nil {
			return nil, err
		}
		s.res.Close()
	}
	res, err := audio.NewResampler(rate, m.rate, audio.WriterFunc(func(f audio.Frame) error {
		err := m.add(s.ring, s.pos, f.Samples)
		s.pos += int64(len(f.Samples))
		return err
	}))
	if err != nil {
		return nil, err
	}
	s.res, s.in = res, rate
	return res, nil
}

// addCaller adds caller audio, taken at t, at the end of the caller's timeline.
//
// The timeline drifts when the network stalls and then delivers in a burst: while
// nothing arrives, voice.ClockedInput feeds digital silence to keep the engine's
// clock, and when the late audio comes it is fed too (the words matter more to the
// engine than the timeline), so from then on the caller's timeline runs ahead of the
// wall clock by the stall, and the caller would slip further behind the agent with
// every stall of a call (TCP carries Twilio's media, and TCP stalls). So the mixer
// notes the runs of digital silence it is given, and when the caller's audio ends
// ahead of the clock, it moves what came after the latest run back over it, where it
// was really said. Audio is never moved over audio, nor over what is encoded.
func (m *mixer) addCaller(f audio.Frame, t time.Time) error {
	res, err := m.resampler(&m.caller, f.Rate)
	if err != nil {
		return err
	}
	n := int64(len(f.Samples)) * int64(m.rate) / int64(f.Rate)
	if ahead := m.caller.pos + n - m.at(t) - m.samples(callerAhead); ahead > 0 {
		m.pullCallerBack(ahead)
	}
	silent := isSilent(f.Samples)
	if silent && m.caller.pos != m.silEnd {
		m.silStart = m.caller.pos
	}
	if err := res.WriteFrame(f); err != nil {
		return err
	}
	if silent {
		m.silEnd = m.caller.pos
	}
	return nil
}

// pullCallerBack moves the caller's audio after its latest silence run back by up to
// back samples, over that run.
//
// Before the caller's first silence, the run is the time before the recording began:
// audio that arrives ahead of the clock then is a backlog the transport had buffered
// before the conversation started (a jitter buffer releasing what it held while the
// session was set up), said before t0. It is moved back over the start, and what
// would land before it (or before what is encoded) is dropped, so the caller's side
// starts in step with the clock.
func (m *mixer) pullCallerBack(back int64) {
	back = min(back, m.silEnd-m.silStart)
	if m.silEnd > 0 {
		back = min(back, m.silEnd-m.base) // a real run: never over encoded audio
	}
	if back <= 0 {
		return
	}
	n := int64(len(m.callerRing))
	from, to := max(m.silEnd, m.base), m.caller.pos
	for i := from; i < to; i++ {
		if d := i - back; d >= m.base {
			m.callerRing[d%n] = m.callerRing[i%n]
		}
	}
	for i := max(to-back, from); i < to; i++ {
		m.callerRing[i%n] = 0
	}
	m.silEnd -= back
	m.caller.pos -= back
}

// isSilent reports digital silence: ClockedInput's fill, or a muted microphone.
func isSilent(s []int16) bool {
	for _, v := range s {
		if v != 0 {
			return false
		}
	}
	return true
}

// addAgent adds an agent frame written to the transport at t.
func (m *mixer) addAgent(f audio.Frame, t time.Time) error {
	s := &m.agent
	restart := s.res != nil && s.in != f.Rate
	pos := m.at(t)
	if m.agentLive && pos-m.agentEnd > m.samples(agentGap) {
		restart = true
	}
	if restart || !m.agentLive {
		// A new stretch of speech: drain the previous one's filter tail where it
		// belongs, then start the filter afresh at this frame's time.
		if s.res != nil {
			if err := s.res.Flush(); err != nil {
				return err
			}
		}
		s.pos, m.agentEnd, m.agentLive = pos, pos, true
	}
	res, err := m.resampler(s, f.Rate)
	if err != nil {
		return err
	}
	m.agentEnd += int64(len(f.Samples)) * int64(m.rate) / int64(f.Rate)
	return res.WriteFrame(f)
}

// add sums samples into ring from pos on. Audio older than what is already encoded is
// dropped (it came too late to be mixed); audio further ahead than the ring holds
// pushes the oldest audio out to the encoder first.
func (m *mixer) add(ring []int16, pos int64, samples []int16) error {
	if skip := m.base - pos; skip > 0 {
		if skip >= int64(len(samples)) {
			return nil
		}
		samples, pos = samples[skip:], m.base
	}
	end := pos + int64(len(samples))
	n := int64(len(ring))
	if over := end - (m.base + n); over > 0 {
		if err := m.commit(m.base + over); err != nil {
			return err
		}
	}
	for i, v := range samples {
		j := (pos + int64(i)) % n
		ring[j] = int16(min(max(int32(ring[j])+int32(v), math.MinInt16), math.MaxInt16))
	}
	m.hi = max(m.hi, end)
	return nil
}

// advance encodes what has settled by now.
func (m *mixer) advance(now time.Time) error {
	return m.commit(min(m.caller.pos, m.at(now)) - m.samples(mixSettle))
}

// commit sums both sides up to upto (never past what has been written), encodes the
// mix and clears it from the rings.
func (m *mixer) commit(upto int64) error {
	upto = min(upto, m.hi)
	n := int64(len(m.callerRing))
	for m.base < upto {
		k := min(upto-m.base, int64(cap(m.buf)))
		out := m.buf[:k]
		for i := range out {
			j := (m.base + int64(i)) % n
			out[i] = limit(int32(m.callerRing[j]) + int32(m.agentRing[j]))
			m.callerRing[j], m.agentRing[j] = 0, 0
		}
		if err := m.out.WriteFrame(audio.Frame{Samples: out, Rate: m.rate}); err != nil {
			return err
		}
		m.base += k
	}
	return nil
}

// close drains both resamplers and encodes everything written.
func (m *mixer) close() error {
	for _, s := range []*stream{&m.caller, &m.agent} {
		if s.res != nil {
			if err := s.res.Flush(); err != nil {
				return err
			}
			s.res.Close()
			s.res = nil
		}
	}
	return m.commit(m.hi)
}

// Clipping protection: two voices at once can sum past full scale. Below limitKnee the
// sum passes untouched (almost all speech: a call's audio peaks well under -3 dBFS);
// above it a tanh curve bends the excess smoothly into the remaining headroom, so the
// loudest overlaps are compressed rather than hard-clipped into distortion, and no
// output ever exceeds int16.
const limitKnee = 24576 // -2.5 dBFS

func limit(v int32) int16 {
	a := v
	if a < 0 {
		a = -a
	}
	if a <= limitKnee {
		return int16(v)
	}
	const room = 32767 - limitKnee
	y := limitKnee + room*math.Tanh(float64(a-limitKnee)/room)
	if v < 0 {
		return int16(-math.Round(y))
	}
	return int16(math.Round(y))
}

// --- WAV ---

// wavSink writes PCM16 WAV through audio.WAVWriter (the mixer hands it up to 100 ms
// at a time, so it needs no buffer of its own); the header is patched on Close.
type wavSink struct {
	ww *audio.WAVWriter
}

func newWAVSink(f *os.File, rate int) (*wavSink, error) {
	ww, err := audio.NewWAVWriter(f, rate)
	if err != nil {
		return nil, err
	}
	return &wavSink{ww: ww}, nil
}

func (w *wavSink) WriteFrame(f audio.Frame) error { return w.ww.WriteFrame(f) }
func (w *wavSink) Close() error                   { return w.ww.Close() }

// --- Ogg Opus (RFC 7845) ---

// Ogg Opus constants.
const (
	// opusPreSkip is the encoder's lookahead at 48 kHz, which a decoder drops from
	// the start (RFC 7845, 4.2): libopus delays its output by Fs/400 + Fs/250 (6.5
	// ms) in its VoIP and audio modes, 312 samples at 48 kHz whatever the input rate.
	// hraban's binding has no OPUS_GET_LOOKAHEAD; TestOggOpus checks the figure
	// against the decoded audio's alignment.
	opusPreSkip = 312
	// oggPagePackets bounds a page to a second of 20 ms packets: the granule position
	// (seek resolution) moves every second, and a page stays a few KB.
	oggPagePackets = 50
	oggVendor      = "Parley"
)

// oggOpusWriter encodes mono audio to Opus, one 20 ms packet per frame, and writes it
// as an Ogg Opus stream (RFC 7845 on RFC 3533): an OpusHead page, an OpusTags page,
// then audio pages, the last flagged end-of-stream with its granule position trimmed
// to the exact length of the input.
type oggOpusWriter struct {
	w      *bufio.Writer
	enc    *libopus.Encoder
	rate   int
	frames *audio.Reframer
	packet []byte

	serial  uint32
	seq     uint32
	packets int64 // packets encoded
	input   int64 // input samples taken, at rate

	// The page being filled.
	segs    []byte
	body    []byte
	npkts   int
	granule int64
	closed  bool
}

func newOggOpusWriter(w io.Writer, rate, bitrate int) (*oggOpusWriter, error) {
	enc, err := libopus.NewEncoder(rate, 1, libopus.AppVoIP)
	if err != nil {
		return nil, fmt.Errorf("ogg opus: new encoder: %w", err)
	}
	if err := errors.Join(enc.SetBitrate(bitrate), enc.SetComplexity(recordingOpusComplexity),
		enc.SetInBandFEC(false)); err != nil {
		return nil, fmt.Errorf("ogg opus: configure encoder: %w", err)
	}
	var s [4]byte
	if _, err := io.ReadFull(rand.Reader, s[:]); err != nil {
		return nil, err
	}
	o := &oggOpusWriter{w: bufio.NewWriterSize(w, 16<<10), enc: enc, rate: rate, packet: make([]byte, 1275),
		serial: binary.LittleEndian.Uint32(s[:])}
	o.frames, err = audio.NewReframer(rate, 20*time.Millisecond, audio.WriterFunc(o.encode))
	if err != nil {
		return nil, err
	}
	// OpusHead (RFC 7845, 5.1): version 1, mono, pre-skip, the input's rate (for
	// information only: Opus decodes at 48 kHz), no gain, mapping family 0.
	head := make([]byte, 19)
	copy(head, "OpusHead")
	head[8], head[9] = 1, 1
	binary.LittleEndian.PutUint16(head[10:], opusPreSkip)
	binary.LittleEndian.PutUint32(head[12:], uint32(rate))
	if err := o.page([][]byte{head}, 0, oggBOS); err != nil {
		return nil, err
	}
	// OpusTags (5.2): the vendor string and no user comments.
	tags := make([]byte, 0, 8+4+len(oggVendor)+4)
	tags = append(tags, "OpusTags"...)
	tags = binary.LittleEndian.AppendUint32(tags, uint32(len(oggVendor)))
	tags = append(tags, oggVendor...)
	tags = binary.LittleEndian.AppendUint32(tags, 0)
	if err := o.page([][]byte{tags}, 0, 0); err != nil {
		return nil, err
	}
	return o, nil
}

// WriteFrame encodes f's samples, in 20 ms packets.
func (o *oggOpusWriter) WriteFrame(f audio.Frame) error {
	if o.closed {
		return audio.ErrClosed
	}
	if f.Rate != o.rate {
		return fmt.Errorf("ogg opus: got a %d Hz frame for a %d Hz stream", f.Rate, o.rate)
	}
	o.input += int64(len(f.Samples))
	return o.frames.WriteFrame(f)
}

func (o *oggOpusWriter) encode(f audio.Frame) error {
	n, err := o.enc.Encode(f.Samples, o.packet)
	if err != nil {
		return fmt.Errorf("ogg opus: encode: %w", err)
	}
	o.packets++
	// Lacing (RFC 3533): a packet is as many 255 segments as fit, then one shorter
	// (possibly 0) that ends it.
	for k := n; ; k -= 255 {
		if k < 255 {
			o.segs = append(o.segs, byte(k))
			break
		}
		o.segs = append(o.segs, 255)
	}
	o.body = append(o.body, o.packet[:n]...)
	o.npkts++
	// A 20 ms packet is 960 samples at 48 kHz, the rate granule positions count in.
	o.granule = o.packets * 960
	// 255 segments is a page's limit; a packet takes at most 6 (1275 bytes).
	if o.npkts >= oggPagePackets || len(o.segs) > 255-6 {
		return o.flushPage(0)
	}
	return nil
}

func (o *oggOpusWriter) flushPage(flags byte) error {
	if o.npkts == 0 && flags&oggEOS == 0 {
		return nil
	}
	err := o.pageRaw(o.segs, o.body, o.granule, flags)
	o.segs, o.body, o.npkts = o.segs[:0], o.body[:0], 0
	return err
}

// Close encodes the remainder, with enough silence after it that the encoder's
// lookahead has let the last input sample out, and ends the stream. The last page's
// granule position is pre-skip plus the input's exact length at 48 kHz, which tells
// decoders to drop the padding (RFC 7845, 4.4).
func (o *oggOpusWriter) Close() error {
	if o.closed {
		return nil
	}
	o.closed = true
	want := opusPreSkip + o.input*48000/int64(o.rate)
	if err := o.frames.Flush(true); err != nil {
		return err
	}
	silence := make([]int16, o.rate/50)
	for o.packets*960 < want {
		if err := o.encode(audio.Frame{Samples: silence, Rate: o.rate}); err != nil {
			return err
		}
	}
	o.granule = want
	if err := o.flushPage(oggEOS); err != nil {
		return err
	}
	return o.w.Flush()
}

// Ogg page header flags.
const (
	oggContinued = 0x01
	oggBOS       = 0x02
	oggEOS       = 0x04
)

// page writes whole packets (each under 255*255 bytes) as one page.
func (o *oggOpusWriter) page(packets [][]byte, granule int64, flags byte) error {
	var segs, body []byte
	for _, p := range packets {
		for k := len(p); ; k -= 255 {
			if k < 255 {
				segs = append(segs, byte(k))
				break
			}
			segs = append(segs, 255)
		}
		body = append(body, p...)
	}
	return o.pageRaw(segs, body, granule, flags)
}

// pageRaw writes one Ogg page (RFC 3533, 6): header, segment table, body, with the
// CRC computed over all three with its own field zeroed.
func (o *oggOpusWriter) pageRaw(segs, body []byte, granule int64, flags byte) error {
	hdr := make([]byte, 27, 27+len(segs))
	copy(hdr, "OggS")
	hdr[4] = 0 // version
	hdr[5] = flags
	binary.LittleEndian.PutUint64(hdr[6:], uint64(granule))
	binary.LittleEndian.PutUint32(hdr[14:], o.serial)
	binary.LittleEndian.PutUint32(hdr[18:], o.seq)
	hdr[26] = byte(len(segs))
	hdr = append(hdr, segs...)
	crc := oggCRC(oggCRC(0, hdr), body)
	binary.LittleEndian.PutUint32(hdr[22:], crc)
	o.seq++
	if _, err := o.w.Write(hdr); err != nil {
		return err
	}
	_, err := o.w.Write(body)
	return err
}

// oggCRCTable is Ogg's CRC-32: polynomial 0x04c11db7, unreflected, initial value 0,
// no final XOR (RFC 3533, 6; not the zlib CRC-32, which is reflected).
var oggCRCTable = func() (t [256]uint32) {
	for i := range t {
		r := uint32(i) << 24
		for range 8 {
			if r&0x80000000 != 0 {
				r = r<<1 ^ 0x04c11db7
			} else {
				r <<= 1
			}
		}
		t[i] = r
	}
	return t
}()

func oggCRC(crc uint32, b []byte) uint32 {
	for _, v := range b {
		crc = crc<<8 ^ oggCRCTable[byte(crc>>24)^v]
	}
	return crc
}
