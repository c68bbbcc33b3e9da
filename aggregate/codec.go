package aggregate

import (
	"encoding/json"

	"github.com/estuite/estuite"
)

// A Codec turns events (and snapshot states) into bytes and back. A Registry uses one codec for
// every event it encodes and decodes; JSON is the default.
type Codec interface {
	// Marshal encodes v, an event value or a pointer to a snapshot state.
	Marshal(v any) ([]byte, error)
	// Unmarshal decodes data into v, a pointer.
	Unmarshal(data []byte, v any) error
	// Format says how the store keeps what Marshal returns: estuite.JSON for valid JSON text
	// (readable in the feed, over HTTP and by other languages), estuite.Binary for any bytes.
	Format() estuite.DataFormat
}

// JSON is the default codec: encoding/json, stored as JSON data.
var JSON Codec = jsonCodec{}

type jsonCodec struct{}

func (jsonCodec) Marshal(v any) ([]byte, error)      { return json.Marshal(v) }
func (jsonCodec) Unmarshal(data []byte, v any) error { return json.Unmarshal(data, v) }
func (jsonCodec) Format() estuite.DataFormat         { return estuite.JSON }
