package server

import (
	"net/url"
	"strings"
)

// slashHint explains, for the escaped path p of a request that matched no route for any method
// (never a 405: its path is a route), that a name with a "/" must be sent with the slash percent-encoded: a client that
// writes /streams/a/b/events means the stream a/b, which is /streams/a%2Fb/events. It returns ""
// for paths where no name can have been split so.
func slashHint(p string) string {
	for _, c := range []struct{ prefix, what string }{
		{"/streams/", "stream"}, {"/subjects/", "subject"}, {"/groups/", "group"},
	} {
		rest, ok := strings.CutPrefix(p, c.prefix)
		if !ok {
			continue
		}
		segs := strings.Split(rest, "/")
		if len(segs) < 2 || segs[0] == "" || segs[1] == "" {
			return ""
		}
		a, err1 := url.PathUnescape(segs[0])
		b, err2 := url.PathUnescape(segs[1])
		if err1 != nil || err2 != nil {
			return ""
		}
		return "; a " + c.what + " name is one path segment: write a \"/\" in it as %2F (the " + c.what + " " +
			a + "/" + b + " is " + c.prefix + segs[0] + "%2F" + segs[1] + ")"
	}
	return ""
}
