package wire

import "github.com/estuite/estuite"

// StreamList is the body of GET /streams.
type StreamList struct {
	Streams []StreamInfo `json:"streams"`
	Next    *string      `json:"next"` // null on the last page
}

// StreamInfo is one stream of a StreamList.
type StreamInfo struct {
	Stream  string `json:"stream"`
	Version int64  `json:"version"`
}

// FromStreamList is the wire form of a Store.ListStreams page.
func FromStreamList(list estuite.StreamList) StreamList {
	out := StreamList{Streams: make([]StreamInfo, len(list.Streams))}
	for i, s := range list.Streams {
		out.Streams[i] = StreamInfo{Stream: s.Name, Version: s.Version}
	}
	if list.Next != "" {
		next := list.Next
		out.Next = &next
	}
	return out
}

// ToStreamList is the estuite.StreamList that l stands for.
func (l StreamList) ToStreamList() estuite.StreamList {
	out := estuite.StreamList{Streams: make([]estuite.StreamInfo, len(l.Streams))}
	for i, s := range l.Streams {
		out.Streams[i] = estuite.StreamInfo{Name: s.Stream, Version: s.Version}
	}
	if l.Next != nil {
		out.Next = *l.Next
	}
	return out
}
