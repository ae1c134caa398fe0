# Parley's production image: one static-ish binary plus the C libraries the media code
# links (opus, soxr) and espeak-ng for the keyless default voice.
FROM golang:1.26-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends libopus-dev libsoxr-dev pkg-config \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=docker
RUN CGO_ENABLED=1 go build -tags nolibopusfile -ldflags "-X main.version=${VERSION}" -o /out/parley ./cmd/parley

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates libopus0 libsoxr0 espeak-ng \
    && rm -rf /var/lib/apt/lists/* && useradd --system --uid 10001 parley \
    && mkdir -p /data/recordings && chown -R parley /data
COPY --from=build /out/parley /usr/local/bin/parley
# Call recordings: a volume shared by the API (which serves them) and the workers (which
# write them); the directory exists owned by parley so a new volume inherits that.
ENV PARLEY_RECORDINGS_DIR=/data/recordings
USER parley
EXPOSE 8080
ENTRYPOINT ["parley"]
CMD ["serve"]
