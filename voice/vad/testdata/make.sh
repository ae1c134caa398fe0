#!/usr/bin/env bash
# make.sh regenerates the VAD test fixtures in this directory from espeak-ng speech and
# sox noise, and writes segments.txt, the ground truth the tests check against.
#
# Needs espeak-ng and sox (scripts/setup installs both). Output is deterministic for a
# given espeak-ng and sox version: sox -R fixes the noise generator's seed, -D turns
# off dither. Run it from anywhere: ./voice/vad/testdata/make.sh
#
# Every fixture is 16-bit mono WAV. Speech is trimmed at both ends (below -50 dBFS) and
# set to an RMS level of -23 dBFS, a typical level for telephone speech, so the
# boundaries written to segments.txt are where the words really begin and end. "SNR"
# below is speech RMS (over the trimmed phrase, pauses included) against noise RMS.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
for tool in espeak-ng sox soxi awk; do
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

# say TEXT OUT: speak TEXT at 16 kHz, trimmed, at -23 dBFS RMS.
say() {
  espeak-ng -v en-us -s 160 -w "$tmp/espeak.wav" "$1"
  "${SOX[@]}" "$tmp/espeak.wav" -r "$RATE" -c 1 -b 16 "$tmp/trim.wav" \
    silence 1 0.005 -50d reverse silence 1 0.005 -50d reverse
  level "$tmp/trim.wav" -23 "$2"
}

# gap SECONDS OUT: digital silence.
gap() { "${SOX[@]}" -n -r "$RATE" -c 1 -b 16 "$2" trim 0 "$1"; }

# noise KIND SECONDS DBFS OUT: KIND (whitenoise, pinknoise, brownnoise) at DBFS RMS.
noise() {
  "${SOX[@]}" -n -r "$RATE" -c 1 -b 16 "$tmp/noise.wav" synth "$2" "$1"
  level "$tmp/noise.wav" "$3" "$4"
}

# mix SPEECH NOISE OUT: sum the two (sox -m would halve each).
mix() { "${SOX[@]}" -m -v 1 "$1" -v 1 "$2" "$3"; }

dur() { soxi -D "$1"; }

: > segments.txt
# segment FILE START END: one spoken phrase of FILE, in seconds from its start.
segment() { printf '%s %.4f %.4f\n' "$1" "$2" "$3" >> segments.txt; }

# build OUT NOISE_KIND NOISE_DBFS LEAD TRAIL TEXT [GAP TEXT]...: phrases separated by
# gaps of silence, LEAD seconds before and TRAIL after, over continuous noise.
build() {
  local out=$1 kind=$2 ndb=$3 lead=$4 trail=$5
  shift 5
  local t=$lead parts=() i=0
  gap "$lead" "$tmp/p$i.wav"; parts+=("$tmp/p$i.wav")
  while [ $# -gt 0 ]; do
    i=$((i + 1))
    say "$1" "$tmp/p$i.wav"; parts+=("$tmp/p$i.wav")
    local d; d=$(dur "$tmp/p$i.wav")
    segment "$out" "$t" "$(awk -v a="$t" -v b="$d" 'BEGIN { print a + b }')"
    t=$(awk -v a="$t" -v b="$d" 'BEGIN { print a + b }')
    shift
    local g=$trail
    if [ $# -gt 0 ]; then g=$1; shift; fi
    i=$((i + 1))
    gap "$g" "$tmp/p$i.wav"; parts+=("$tmp/p$i.wav")
    t=$(awk -v a="$t" -v b="$g" 'BEGIN { print a + b }')
  done
  "${SOX[@]}" "${parts[@]}" "$tmp/speech.wav"
  noise "$kind" "$(dur "$tmp/speech.wav")" "$ndb" "$tmp/bg.wav"
  mix "$tmp/speech.wav" "$tmp/bg.wav" "$out"
}

# Near-clean speech (noise 47 dB down), with time to settle before and after.
build clean.wav pinknoise -70 0.8 1.2 "Hello, I would like to book an appointment for next Tuesday."
# Pink noise at 20 dB SNR.
build pink20.wav pinknoise -43 0.8 1.2 "Can you tell me what time the office opens on Saturday?"
# White noise at 10 dB SNR: hiss, as on a bad mobile line.
build white10.wav whitenoise -33 0.8 1.2 "My account number is four five seven two nine."
# Pauses: 250 ms between words inside one turn (hangover must bridge it), then 1.3 s
# before a second turn (it must not). Brown noise (rumble) at 15 dB SNR.
build pauses.wav brownnoise -38 0.8 1.2 "Yes." 0.25 "That is correct." 1.3 "Thank you very much."

# Noise alone, at the levels used above: nothing here is speech.
noise pinknoise 4 -33 noise_pink.wav
noise brownnoise 4 -30 noise_brown.wav

# A click (5 ms, 10 ms rise and fall, near full scale) at 1.0 s and a cough-like burst
# (80 ms of band-limited noise, 10 ms fade in, 40 ms fade out, at speech level) at 2.0
# s, over pink noise at -50 dBFS. Both are shorter than the Detector's minimum speech.
noise pinknoise 3 -50 "$tmp/bg.wav"
"${SOX[@]}" -n -r "$RATE" -c 1 -b 16 "$tmp/click.wav" synth 0.005 square 1000 gain -3
"${SOX[@]}" -n -r "$RATE" -c 1 -b 16 "$tmp/cough0.wav" synth 0.08 pinknoise sinc 200-3000 fade t 0.01 0.08 0.04
level "$tmp/cough0.wav" -20 "$tmp/cough.wav"
"${SOX[@]}" "$tmp/click.wav" "$tmp/click_at.wav" pad 1.0 1.995
"${SOX[@]}" "$tmp/cough.wav" "$tmp/cough_at.wav" pad 2.0 0.92
"${SOX[@]}" -m -v 1 "$tmp/bg.wav" -v 1 "$tmp/click_at.wav" -v 1 "$tmp/cough_at.wav" bursts.wav

# A phone call: speech band-limited to 300-3400 Hz, pink noise at 15 dB SNR, 8 kHz
# mu-law, the way a SIP trunk or Twilio delivers it.
build "$tmp/phone16k.wav" pinknoise -38 0.8 1.2 "I am calling about the invoice you sent last week."
sed -i "s|^$tmp/phone16k.wav |phone8k_ulaw.wav |" segments.txt
"${SOX[@]}" "$tmp/phone16k.wav" -r 8000 -e mu-law -b 8 phone8k_ulaw.wav sinc 300-3400

ls -l ./*.wav
cat segments.txt
