// Package embed owns the embedding providers of Parley's knowledge bases: the code that
// turns chunk and query texts into the vectors pgvector stores and searches.
//
// There are two:
//
//   - Local, built in, pure Go, no network and no key, so that a fresh install (and
//     `make run` on a laptop without internet) has working retrieval. It is a lexical model
//     (hashed words, word pairs and character n-grams), good at "same words, other forms"
//     and blind to synonyms; full-text search is fused with it anyway.
//   - OpenAI, for any OpenAI-compatible /embeddings endpoint: OpenAI itself, Ollama, vLLM,
//     Hugging Face TEI, LocalAI. It batches, runs batches in parallel, retries what is worth
//     retrying, and checks every vector it gets back.
//
// Every embedder has an ID naming the model and its parameters. A knowledge base records
// the ID with its vectors, because vectors from different models (or the same model at
// another size, or another version of the local model) cannot be compared: a change of ID
// means re-embedding every chunk.
package embed

import (
	"context"
	"math"
)

// Embedder turns texts into vectors. Implementations are safe for concurrent use.
type Embedder interface {
	// ID names the model and its parameters, e.g. "local:hash-v1:384" or
	// "openai:text-embedding-3-small:1536"; a knowledge base records it, and a change of ID
	// means re-embedding.
	ID() string
	// Dim is the length of every vector Embed returns.
	Dim() int
	// Embed returns one L2-normalised vector per text, in order.
	Embed(ctx context.Context, texts []string) ([][]float32, error)
}

var (
	_ Embedder = (*Local)(nil)
	_ Embedder = (*OpenAI)(nil)
)

// normalize scales v to unit L2 length in place and reports false, leaving v alone, when
// that is impossible (all zeros, or a NaN or infinity anywhere).
//
// The sum of squares is kept in float64. Each term is exact there (a float32 squared needs
// 48 of float64's 53 bits), so whether or not the compiler fuses multiply and add (it may,
// on arm64) the result is bit-for-bit the same on every machine; the local model's vectors
// are stored, and must not depend on where they were computed.
func normalize(v []float32) bool {
	var ss float64
	for _, x := range v {
		f := float64(x)
		if math.IsNaN(f) || math.IsInf(f, 0) {
			return false
		}
		ss += f * f
	}
	if ss == 0 || math.IsInf(ss, 0) {
		return false
	}
	inv := 1 / math.Sqrt(ss)
	for i, x := range v {
		v[i] = float32(float64(x) * inv)
	}
	return true
}
