package knowledge

// VectorSQL exposes the vector query to the external tests, which EXPLAIN it.
var VectorSQL = vectorSQL
