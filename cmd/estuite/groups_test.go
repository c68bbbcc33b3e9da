package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/estuite/estuite"
	"github.com/estuite/estuite/table/bolt"
)

// groupProjection is a group handler that refuses the events named in refuse.
type groupProjection struct {
	mu     sync.Mutex
	refuse map[string]bool // "stream@version"
}

func (p *groupProjection) handle(_ context.Context, ev estuite.FeedEvent) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if key := fmt.Sprintf("%s@%d", ev.Stream, ev.Version); p.refuse[key] {
		return errors.New("projection refused " + key)
	}
	return nil
}

// withEmbeddedStore opens the embedded store in data in this process (the commands then open it
// after it is closed again), runs f on it with a dispatcher, and closes it.
func withEmbeddedStore(t *testing.T, data string, f func(ctx context.Context, s *estuite.Store)) {
	t.Helper()
	ctx := context.Background()
	b, err := bolt.Open(filepath.Join(data, "estuite.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	s, err := estuite.Open(ctx, b, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	d := estuite.NewDispatcher(s, &estuite.DispatcherOptions{PollInterval: 5 * time.Millisecond, ScavengeInterval: -1})
	if err := d.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer d.Stop()
	f(ctx, s)
}

// runGroupMember runs a member of group with handler p until done holds (polled, for at most
// 30 s), then stops it.
func runGroupMember(t *testing.T, ctx context.Context, s *estuite.Store, group string, p *groupProjection, done func() bool) {
	t.Helper()
	m, err := s.JoinGroup(ctx, estuite.GroupOptions{Group: group, Member: "cli-test", Handler: p.handle, MaxRetries: 1,
		LeaseDuration: 1500 * time.Millisecond, PollInterval: 5 * time.Millisecond, MaxPollInterval: 50 * time.Millisecond,
		CheckpointInterval: 20 * time.Millisecond, RetryBackoff: time.Millisecond, MaxRetryBackoff: 2 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Stop()
	deadline := time.Now().Add(30 * time.Second)
	for !done() {
		if time.Now().After(deadline) {
			t.Fatalf("group %s: not done after 30 s (member stats %+v)", group, m.Stats())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

type cliParked struct {
	Shard    int    `json:"shard"`
	Position int64  `json:"position"`
	Stream   string `json:"stream"`
	Version  int64  `json:"version"`
	Attempts int    `json:"attempts"`
	Waiting  bool   `json:"waiting"`
	Replay   bool   `json:"replay"`
	Error    string `json:"error"`
}

// parkedOf lists a group's parked events with `estuite parked --json`.
func parkedOf(t *testing.T, data, group string) []cliParked {
	t.Helper()
	out, code := estuiteCLI(t, "parked", "--data", data, "--json", group)
	if code != 0 {
		t.Fatalf("parked --json: exit %d\n%s", code, out)
	}
	var body struct {
		Parked []cliParked `json:"parked"`
	}
	if err := json.Unmarshal([]byte(out), &body); err != nil {
		t.Fatalf("parked --json: %v\n%s", err, out)
	}
	return body.Parked
}

// `estuite groups`, `group`, `parked`, `parked replay` and `parked discard` on the embedded store,
// with parked events made by a real member of the group.
func TestConsumerGroupCommands(t *testing.T) {
	data := t.TempDir()
	const group = "orders/projection"
	proj := &groupProjection{refuse: map[string]bool{"poison@2": true, "bad@1": true}}
	withEmbeddedStore(t, data, func(ctx context.Context, s *estuite.Store) {
		for stream, n := range map[string]int{"poison": 3, "bad": 1, "fine": 2} {
			evs := make([]estuite.EventData, n)
			for i := range evs {
				evs[i] = estuite.EventData{Type: "T", Data: []byte(`{}`)}
			}
			if _, err := s.Append(ctx, stream, evs, nil); err != nil {
				t.Fatal(err)
			}
		}
		runGroupMember(t, ctx, s, group, proj, func() bool {
			p, err := s.ParkedEvents(ctx, group, 0)
			return err == nil && len(p) == 3 && s.WaitGroupHandled(ctx, group, "fine", 2) == nil
		})
	})

	// groups
	out, code := estuiteCLI(t, "groups", "--data", data)
	if code != 0 || !strings.Contains(out, "GROUP") || !regexpMatch(`(?m)^orders/projection\s+1\s+8\s+8\s*$`, out) {
		t.Fatalf("groups: exit %d\n%s", code, out)
	}
	out, code = estuiteCLI(t, "groups", "--data", data, "--json")
	if code != 0 || strings.TrimSpace(out) != `{"groups":[{"group":"orders/projection","shards":1,"ranges":8}]}` {
		t.Fatalf("groups --json: exit %d\n%s", code, out)
	}
	empty := t.TempDir()
	if _, code := estuiteCLI(t, "append", "--data", empty, "other", "Happened", "{}"); code != 0 {
		t.Fatalf("append: exit %d", code)
	}
	if out, code := estuiteCLI(t, "groups", "--data", empty); code != 0 || strings.TrimSpace(out) != "no consumer groups" {
		t.Fatalf("groups of a store without groups: exit %d\n%s", code, out)
	}
	if _, code := estuiteCLI(t, "groups", "--data", data, "extra"); code != 2 {
		t.Fatalf("groups with an argument: exit %d, want 2", code)
	}

	// group
	out, code = estuiteCLI(t, "group", "--data", data, group)
	if code != 0 || !strings.Contains(out, "group orders/projection: 1 feed shard × 8 ranges = 8 slots, 0 members, 3 parked events") ||
		!strings.Contains(out, "SLOT") || !regexpMatch(`(?m)^0/7\s+-\s+\d+\s+\d+\s+\S+\s*$`, out) {
		t.Fatalf("group: exit %d\n%s", code, out)
	}
	out, code = estuiteCLI(t, "group", group, "--data", data, "--json") // flags after the argument too
	var st struct {
		Group   string            `json:"group"`
		Members []json.RawMessage `json:"members"`
		Slots   []struct {
			Owner    *string `json:"owner"`
			Position int64   `json:"position"`
			Lag      int64   `json:"lag"`
		} `json:"slots"`
		Parked int `json:"parked"`
	}
	if err := json.Unmarshal([]byte(out), &st); code != 0 || err != nil || st.Group != group || st.Parked != 3 || len(st.Slots) != 8 ||
		st.Members == nil || len(st.Members) != 0 || st.Slots[0].Owner != nil {
		t.Fatalf("group --json: exit %d, %v\n%s", code, err, out)
	}
	if _, code := estuiteCLI(t, "group", "--data", data, "nope"); code != 1 {
		t.Fatalf("group of an unknown group: exit %d, want 1", code)
	}
	if _, code := estuiteCLI(t, "group", "--data", data); code != 2 {
		t.Fatalf("group without a name: exit %d, want 2", code)
	}

	// parked
	out, code = estuiteCLI(t, "parked", "--data", data, group)
	if code != 0 || !regexpMatch(`(?m)^0:\d+\s+poison@2\s+T\s+2\s+parked\s+\S+\s+projection refused poison@2$`, out) ||
		!regexpMatch(`(?m)^0:\d+\s+poison@3\s+T\s+0\s+waiting\s`, out) || !strings.Contains(out, "bad@1") {
		t.Fatalf("parked: exit %d\n%s", code, out)
	}
	parked := parkedOf(t, data, group)
	if len(parked) != 3 {
		t.Fatalf("parked --json: %+v", parked)
	}
	at := map[string]cliParked{}
	for _, p := range parked {
		at[fmt.Sprintf("%s@%d", p.Stream, p.Version)] = p
	}
	ref := func(key string) string { return fmt.Sprintf("%d:%d", at[key].Shard, at[key].Position) }
	if out, code := estuiteCLI(t, "parked", "list", "--data", data, "--limit", "1", "--json", group); code != 0 || strings.Count(out, `"stream"`) != 1 {
		t.Fatalf("parked list --limit 1: exit %d\n%s", code, out)
	}
	if _, code := estuiteCLI(t, "parked", "--data", data, "nope"); code != 1 {
		t.Fatalf("parked of an unknown group: exit %d, want 1", code)
	}

	// Mistakes in the command line: exit 2, and nothing is changed.
	for _, args := range [][]string{
		{"parked"},
		{"parked", "replay"},
		{"parked", "discard", "--data", data},
		{"parked", "replay", group},
		{"parked", "replay", group, "--all", ref("bad@1")},
		{"parked", "replay", group, "0"},
		{"parked", "replay", group, "0:x"},
		{"parked", "replay", group, "0:0"},
		{"parked", "replay", group, "-1:5"},
		{"parked", "discard", group, ref("bad@1"), ref("bad@1")},
		{"parked", "discard", group, "--limit", "1", "--all"},
		{"parked", group, "--all"},
		{"parked", group, "extra"},
		{"parked", "--limit", "-1", group},
		{"parked", "--nope", group},
	} {
		if _, code := estuiteCLI(t, args...); code != 2 {
			t.Errorf("estuite %s: exit %d, want 2", strings.Join(args, " "), code)
		}
	}
	if _, code := estuiteCLI(t, "parked", "replay", "--data", data, group, ref("poison@2"), "0:999999"); code != 1 {
		t.Fatalf("replay naming an event that is not parked: exit %d, want 1", code)
	}
	for _, p := range parkedOf(t, data, group) {
		if p.Replay {
			t.Fatalf("a refused replay marked %+v", p)
		}
	}
	if _, code := estuiteCLI(t, "parked", "--help"); code != 0 {
		t.Fatalf("parked --help: exit %d", code)
	}

	// discard one, replay another (flags after the arguments).
	out, code = estuiteCLI(t, "parked", "discard", "--data", data, group, ref("bad@1"))
	if code != 0 || strings.TrimSpace(out) != "discarded 1 parked event of group orders/projection" {
		t.Fatalf("parked discard: exit %d\n%s", code, out)
	}
	out, code = estuiteCLI(t, "parked", "replay", group, ref("poison@2"), "--data", data, "--json")
	if code != 0 || strings.TrimSpace(out) != `{"replayed":1}` {
		t.Fatalf("parked replay: exit %d\n%s", code, out)
	}
	parked = parkedOf(t, data, group)
	if len(parked) != 2 || parked[0].Version != 2 || !parked[0].Replay || parked[1].Replay {
		t.Fatalf("parked after the discard and the replay: %+v", parked)
	}
	if out, code := estuiteCLI(t, "parked", "--data", data, group); code != 0 || !strings.Contains(out, "parked, replay asked") {
		t.Fatalf("parked after the replay: exit %d\n%s", code, out)
	}

	// A member with the projection fixed replays poison@2, then poison@3 that waited behind it.
	proj.mu.Lock()
	proj.refuse = map[string]bool{}
	proj.mu.Unlock()
	withEmbeddedStore(t, data, func(ctx context.Context, s *estuite.Store) {
		runGroupMember(t, ctx, s, group, proj, func() bool {
			p, err := s.ParkedEvents(ctx, group, 0)
			return err == nil && len(p) == 0
		})
		if err := s.WaitGroupHandled(ctx, group, "poison", 3); err != nil {
			t.Fatal(err)
		}
	})
	if out, code := estuiteCLI(t, "parked", "--data", data, group); code != 0 || strings.TrimSpace(out) != "group orders/projection has no parked events" {
		t.Fatalf("parked after the replay ran: exit %d\n%s", code, out)
	}
	out, code = estuiteCLI(t, "parked", "discard", "--data", data, "--all", group)
	if code != 0 || strings.TrimSpace(out) != "discarded 0 parked events of group orders/projection" {
		t.Fatalf("parked discard --all of nothing: exit %d\n%s", code, out)
	}
	if out, code := estuiteCLI(t, "group", "--data", data, group); code != 0 || !strings.Contains(out, "0 parked events") {
		t.Fatalf("group after the replay: exit %d\n%s", code, out)
	}
}

func regexpMatch(pattern, s string) bool { return regexp.MustCompile(pattern).MatchString(s) }
