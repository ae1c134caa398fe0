// Package knowledge owns knowledge bases: their sources (text, web pages, uploaded files),
// ingestion (extract → chunk → embed, as River jobs), and hybrid retrieval over pgvector
// HNSW and PostgreSQL full-text search fused by reciprocal-rank fusion.
//
// The voice engine calls Search in the conversation path; everything else is the API's.
// Subpackages: extract (files and pages to structured text), chunk (structure-aware
// token-sized chunks) and embed (the embedding providers).
package knowledge
