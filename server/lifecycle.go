package server

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/estuite/estuite"
	"github.com/estuite/estuite/internal/wire"
)

// maxMetadataBodyBytes bounds a PUT /streams/{stream}/metadata body: the custom object's limit
// (estuite.MaxCustomMetadataLength UTF-16 units, at most 3 bytes each) and room for the rest.
const maxMetadataBodyBytes = 3*estuite.MaxCustomMetadataLength + 4096

// metadataJSON is a stream's metadata as the API shows it (internal/wire).
type metadataJSON = wire.Metadata

func toMetadataJSON(stream string, md estuite.StreamMetadata) metadataJSON {
	out := metadataJSON{Stream: stream, MetadataVersion: md.MetadataVersion, MaxCount: md.MaxCount, TruncateBefore: md.TruncateBefore, Custom: md.Custom}
	if md.MaxAge != nil {
		secs := int64(*md.MaxAge / time.Second)
		out.MaxAge = &secs
	}
	if out.Custom == nil {
		out.Custom = json.RawMessage("null")
	}
	return out
}

// handleGetMetadata serves GET /streams/{stream}/metadata.
func (s *Server) handleGetMetadata(w http.ResponseWriter, r *http.Request) {
	stream := s.stream(r)
	if _, err := parseQuery(r, nil, nil); err != nil {
		s.fail(w, r, err)
		return
	}
	md, err := s.store.Metadata(r.Context(), stream)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, toMetadataJSON(stream, md))
}

// handlePutMetadata serves PUT /streams/{stream}/metadata.
func (s *Server) handlePutMetadata(w http.ResponseWriter, r *http.Request) {
	stream := s.stream(r)
	if _, err := parseQuery(r, nil, nil); err != nil {
		s.fail(w, r, err)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxMetadataBodyBytes))
	if err != nil {
		s.fail(w, r, requestError(r, err))
		return
	}
	md, expected, err := parseMetadataBody(body)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	got, err := s.store.SetMetadata(r.Context(), stream, md, expected)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, toMetadataJSON(stream, got))
}

// parseMetadataBody parses {"expectedMetadataVersion": n|"any", "maxAge": secs|null, "maxCount":
// n|null, "truncateBefore": v|null, "custom": {…}|null}. Absent members are null ("any" for the
// expected version); unknown members are refused.
func parseMetadataBody(body []byte) (estuite.StreamMetadata, estuite.MetadataExpected, error) {
	var md estuite.StreamMetadata
	expected := estuite.AnyMetadataVersion
	if jsonKind(body) != '{' || !json.Valid(body) {
		return md, expected, badRequest("the body must be a JSON object")
	}
	count := func(name string, raw []byte, lo int64) (*int64, error) {
		if jsonKind(raw) == 'n' {
			return nil, nil
		}
		v, err := strconv.ParseInt(string(bytes.TrimSpace(raw)), 10, 64)
		if err != nil || v < lo {
			return nil, badRequest("%s must be null or an integer from %d, not %s", name, lo, bytes.TrimSpace(raw))
		}
		return &v, nil
	}
	err := decodeObject(body, "the body", []string{"expectedMetadataVersion", "maxAge", "maxCount", "truncateBefore", "custom"}, func(name string, raw []byte) error {
		var err error
		switch name {
		case "expectedMetadataVersion":
			if jsonKind(raw) == '"' {
				var text string
				if json.Unmarshal(raw, &text) != nil || text != "any" {
					return badRequest(`expectedMetadataVersion must be a non-negative integer or "any"`)
				}
				return nil
			}
			v, err := strconv.ParseInt(string(bytes.TrimSpace(raw)), 10, 64)
			if err != nil || v < 0 {
				return badRequest(`expectedMetadataVersion must be a non-negative integer or "any", not %s`, bytes.TrimSpace(raw))
			}
			expected = estuite.MetadataExpected(v)
		case "maxAge":
			var secs *int64
			if secs, err = count(name, raw, 0); err == nil && secs != nil {
				if *secs > int64(estuite.MaxAgeLimit/time.Second) {
					return badRequest("maxAge must be at most %d seconds", int64(estuite.MaxAgeLimit/time.Second))
				}
				d := time.Duration(*secs) * time.Second
				md.MaxAge = &d
			}
		case "maxCount":
			md.MaxCount, err = count(name, raw, 0)
		case "truncateBefore":
			md.TruncateBefore, err = count(name, raw, 0)
		case "custom":
			switch jsonKind(raw) {
			case 'n':
			case '{':
				md.Custom = json.RawMessage(bytes.TrimSpace(raw))
			default:
				return badRequest("custom must be null or a JSON object")
			}
		}
		return err
	})
	return md, expected, err
}

// StreamVersionHeader is the header of a DELETE /streams/{stream} answer (204) that says the
// stream's version when it was deleted: its events up to it are deleted.
const StreamVersionHeader = "Estuite-Stream-Version"

// handleDelete serves DELETE /streams/{stream}?expectedVersion=V&hard=true.
func (s *Server) handleDelete(w http.ResponseWriter, r *http.Request) {
	stream := s.stream(r)
	q, err := parseQuery(r, []string{"expectedVersion", "hard"}, nil)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	var o estuite.DeleteOptions
	if q.Has("expectedVersion") {
		if o.Expected, err = expectedParam(q.Get("expectedVersion")); err != nil {
			s.fail(w, r, err)
			return
		}
	}
	switch h := q.Get("hard"); {
	case !q.Has("hard"), h == "false":
	case h == "true":
		o.Hard = true
	default:
		s.fail(w, r, badRequest(`hard must be "true" or "false", not %q`, h))
		return
	}
	res, err := s.store.Delete(r.Context(), stream, &o)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	// The version deleted up to, for clients that report it (estuite delete --server).
	w.Header().Set(StreamVersionHeader, strconv.FormatInt(res.Version, 10))
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusNoContent)
}

// expectedParam parses an expectedVersion query parameter: a non-negative integer, or "any",
// "no_stream", "exists".
func expectedParam(text string) (estuite.ExpectedVersion, error) {
	raw, err := json.Marshal(text)
	if text != "" && text[0] >= '0' && text[0] <= '9' {
		raw, err = []byte(text), nil
	}
	if err != nil {
		return estuite.Any, badRequest("malformed expectedVersion")
	}
	return parseExpected(raw)
}

// handleScavenge serves POST /admin/scavenge: one scavenge pass now, answered when it is done.
func (s *Server) handleScavenge(w http.ResponseWriter, r *http.Request) {
	if _, err := parseQuery(r, nil, nil); err != nil {
		s.fail(w, r, err)
		return
	}
	st, err := s.store.Scavenge(r.Context())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, struct {
		Streams  int `json:"streams"`
		Removed  int `json:"removed"`
		Redacted int `json:"redacted"`
		Waiting  int `json:"waiting"`
	}{st.Streams, st.Removed, st.Redacted, st.Waiting})
}
