#!/usr/bin/env bash
# make.sh regenerates the caller speech the voice engine's tests and benchmarks play
# into a Session: espeak-ng phrases at 16 kHz, 16-bit mono, trimmed at both ends (below
# -50 dBFS) and set to an RMS level of -23 dBFS, a typical telephone speech level. The
# tests add the silences around them.
#
# Needs espeak-ng and sox (scripts/setup installs both). Output is deterministic for a
# given espeak-ng and sox version. Run it from anywhere: ./voice/testdata/make.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
for tool in espeak-ng sox awk; do
  command -v "$tool" >/dev/null || { echo "make.sh: $tool is missing; run scripts/setup" >&2; exit 1; }
done

RATE=16000
SOX=(sox -R -D -V1)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# level IN DBFS OUT: scale IN so that its RMS is DBFS.
level() {
  local rms gain
  rms=$(sox "$1" -n stat 2>&1 | awk '/^RMS +amplitude/ {print $3}')
  gain=$(awk -v r="$rms" -v l="$2" 'BEGIN { printf "%.3f", l - 20*log(r)/log(10) }')
  "${SOX[@]}" "$1" "$3" gain "$gain"
}

# say TEXT OUT [VOICE]: speak TEXT at 16 kHz, trimmed, at -23 dBFS RMS.
say() {
  espeak-ng -v "${3:-en-us}" -s 165 -w "$tmp/espeak.wav" "$1"
  "${SOX[@]}" "$tmp/espeak.wav" -r "$RATE" -c 1 -b 16 "$tmp/trim.wav" \
    silence 1 0.005 -50d reverse silence 1 0.005 -50d reverse
  level "$tmp/trim.wav" -23 "$2"
}

# A caller's question, about 2.5 s: a complete turn.
say "Hello, I would like to book an appointment for Tuesday." hello.wav
# A barge-in: about 2 s of speech over the agent.
say "Wait, stop. I have a different question about my bill." interrupt.wav en-us+m3
# A backchannel over the agent: long enough for the VAD's onset (200 ms), far shorter
# than the default barge-in threshold (700 ms).
say "Yeah." yeah.wav en-us+m3
# Voicemail detection (voicemail_test.go): an answering machine's greeting, about 7 s
# in three sentences, and a person picking up with a short "Hello?".
say "Hi, you have reached Alex Morgan. I am not available to take your call right now. Please leave a message after the tone." greeting.wav en-us+f3
say "Hello?" pickup.wav en-us+m3
# A short greeting, under the long-greeting threshold (4 s), with no beep after it.
say "Sorry I missed your call. Leave a message." shortgreeting.wav en-us+f3
# A cough: 350 ms of band-limited noise (20 ms attack, 120 ms decay) at -20 dBFS, loud
# and broadband enough for the VAD's onset, far shorter than a barge-in.
"${SOX[@]}" -n -r "$RATE" -c 1 -b 16 "$tmp/cough0.wav" synth 0.35 pinknoise sinc 200-3000 fade t 0.02 0.35 0.12
level "$tmp/cough0.wav" -20 cough.wav

ls -l ./*.wav
for f in ./*.wav; do printf '%s %ss\n' "$f" "$(soxi -D "$f")"; done
