package errs

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// FromJSON turns an encoding/json decoding error into a 400 that names the offending
// field. rename, when not nil, maps encoding/json's field path to the name the client
// wrote (for example to drop embedded struct names).
func FromJSON(err error, rename func(string) string) error {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syn):
		return BadRequest("invalid_json", fmt.Sprintf("Malformed JSON at byte %d: %v", syn.Offset, syn))
	case errors.As(err, &typ):
		field := typ.Field
		if rename != nil {
			field = rename(field)
		}
		if field == "" {
			field = "body"
		}
		want := jsonTypeName(typ)
		e := BadRequest("invalid_type", fmt.Sprintf("Field %s must be %s, not %s", field, want, typ.Value))
		e.Fields = map[string]string{field: "must be " + want}
		return e
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return BadRequest("invalid_json", "Malformed JSON: unexpected end of input")
	}
	return BadRequest("invalid_json", "Malformed JSON: "+err.Error())
}

func jsonTypeName(e *json.UnmarshalTypeError) string {
	if e.Type == nil {
		return "a different type"
	}
	switch e.Type.Kind().String() {
	case "string":
		return "a string"
	case "bool":
		return "a boolean"
	case "int", "int8", "int16", "int32", "int64", "uint", "uint8", "uint16", "uint32", "uint64":
		return "an integer"
	case "float32", "float64":
		return "a number"
	case "slice", "array":
		return "an array"
	case "map", "struct":
		return "an object"
	}
	return "a different type"
}
