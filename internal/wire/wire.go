// Package wire holds the JSON forms of the HTTP API's answers (docs/http-api.md) that the server
// encodes and the client decodes, so that the two cannot drift apart.
package wire

import "encoding/json"

// Event is an event as the API shows it.
type Event struct {
	Shard        *int            `json:"shard,omitempty"`    // GET /feed/all only
	Position     int64           `json:"position,omitempty"` // feed events only
	Stream       string          `json:"stream"`
	Version      int64           `json:"version"`
	ID           string          `json:"id"`
	Type         string          `json:"type"`
	Data         json.RawMessage `json:"data,omitempty"`       // JSON data; absent when empty
	DataBase64   *string         `json:"dataBase64,omitempty"` // binary data
	Metadata     json.RawMessage `json:"metadata,omitempty"`
	CommitID     string          `json:"commitId"`
	RecordedAt   string          `json:"recordedAt"`
	DispatchedAt string          `json:"dispatchedAt,omitempty"` // feed events only
	Subject      string          `json:"subject,omitempty"`      // events that name a subject
	Erased       bool            `json:"erased,omitempty"`       // the subject was forgotten: no data, no metadata
}

// Metadata is a stream's metadata as the API shows it.
type Metadata struct {
	Stream          string          `json:"stream"`
	MetadataVersion int64           `json:"metadataVersion"`
	MaxAge          *int64          `json:"maxAge"` // seconds
	MaxCount        *int64          `json:"maxCount"`
	TruncateBefore  *int64          `json:"truncateBefore"`
	Custom          json.RawMessage `json:"custom"`
}

// GroupInfo is a consumer group's layout as the API shows it.
type GroupInfo struct {
	Group  string `json:"group"`
	Shards int    `json:"shards"`
	Ranges int    `json:"ranges"`
}

// GroupState is a consumer group's state (estuite.GroupState) as the API shows it.
type GroupState struct {
	Group   string        `json:"group"`
	Shards  int           `json:"shards"`
	Ranges  int           `json:"ranges"`
	Members []GroupMember `json:"members"`
	Slots   []GroupSlot   `json:"slots"`
	Parked  int           `json:"parked"`
}

// GroupMember is a member of a consumer group in GroupState.
type GroupMember struct {
	Member  string  `json:"member"`
	Updated *string `json:"updated"` // null when the row holds no time
	Slots   int     `json:"slots"`
}

// GroupSlot is a slot of a consumer group in GroupState.
type GroupSlot struct {
	Shard    int     `json:"shard"`
	Range    int     `json:"range"`
	Owner    *string `json:"owner"` // null when free
	Position int64   `json:"position"`
	Lag      int64   `json:"lag"`
	Updated  *string `json:"updated"` // null when the slot has no row yet
}

// Parked is a parked event (estuite.ParkedEvent) as the API shows it.
type Parked struct {
	Shard    int     `json:"shard"`
	Range    int     `json:"range"`
	Position int64   `json:"position"`
	Stream   string  `json:"stream"`
	Version  int64   `json:"version"`
	Type     string  `json:"type"`
	EventID  string  `json:"eventId"`
	Error    string  `json:"error"`
	Attempts int     `json:"attempts"`
	Waiting  bool    `json:"waiting"`
	Replay   bool    `json:"replay"`
	Parked   *string `json:"parked"` // null when the row holds no time
}
