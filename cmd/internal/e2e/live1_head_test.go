package e2e

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshup/meshup/proto"
)

// headDropWriter is a hostile relay's response writer: it passes a sealed
// channel's records on whole, except the head record of head seq seq,
// which it drops (a relay withholding a newer channel head).
type headDropWriter struct {
	http.ResponseWriter
	seq     uint64
	dropped *atomic.Int32 // heads dropped, over every reader
	buf     []byte
}

func (hw *headDropWriter) Unwrap() http.ResponseWriter { return hw.ResponseWriter }

func (hw *headDropWriter) Write(p []byte) (int, error) {
	hw.buf = append(hw.buf, p...)
	for len(hw.buf) >= 4 {
		l := 4 + int(binary.BigEndian.Uint32(hw.buf))
		if len(hw.buf) < l {
			break
		}
		rec := hw.buf[:l]
		if kind, seq, err := proto.ParseLiveRecord(rec); err == nil && kind == proto.LiveHead && seq == hw.seq {
			hw.dropped.Add(1)
			rec = nil
		}
		if _, err := hw.ResponseWriter.Write(rec); err != nil {
			return 0, err
		}
		hw.buf = hw.buf[l:]
	}
	return len(p), nil
}

// liveNodeReader is live.js's reader (openRecords) under Node, reading the
// records at a URL: it prints one JSON line, {out, heads, err}.
const liveNodeReader = `
const [liveJS, url, keyHex, id] = process.argv.slice(1);
const live = await import(liveJS);
const key = Uint8Array.from(keyHex.match(/../g), (x) => parseInt(x, 16));
const kl = await live.deriveKey(key, id);
const res = await fetch(url);
let out = '', heads = [], err = null;
try {
  for await (const r of live.openRecords(kl, res.body)) {
    if (r.kind === 'head') heads.push({ seq: r.seq, type: r.meta.type, init: new TextDecoder().decode(r.init) });
    else out += new TextDecoder().decode(r.data);
  }
} catch (e) {
  err = { kind: e.kind, seq: e.seq, head: e.head, message: e.message };
}
console.log(JSON.stringify({ status: res.status, out, heads, err }));
`

type nodeLiveRead struct {
	Status int    `json:"status"`
	Out    string `json:"out"`
	Heads  []struct {
		Seq  uint64 `json:"seq"`
		Type string `json:"type"`
		Init string `json:"init"`
	} `json:"heads"`
	Err *struct {
		Kind    string `json:"kind"`
		Seq     int64  `json:"seq"`
		Head    int64  `json:"head"`
		Message string `json:"message"`
	} `json:"err"`
}

// startNodeLiveReader runs liveNodeReader on url; the result comes on the
// channel once the reader ends.
func startNodeLiveReader(t *testing.T, node, url string, k proto.E2EKey, id proto.ItemID) <-chan nodeLiveRead {
	t.Helper()
	liveJS, err := filepath.Abs("../../../client/web/live.js")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	cmd := exec.CommandContext(ctx, node, "--input-type=module", "-e", liveNodeReader, "file://"+liveJS, url, hex.EncodeToString(k[:]), id.String())
	cmd.Stderr = testWriter{t}
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan nodeLiveRead, 1)
	exited := make(chan struct{})
	// A test that stops early ends the reader before it ends (its stderr
	// logs to t).
	t.Cleanup(func() { cancel(); <-exited })
	go func() {
		defer close(exited)
		var r nodeLiveRead
		lines := bufio.NewScanner(stdout)
		lines.Buffer(nil, 1<<20)
		if lines.Scan() {
			if err := json.Unmarshal(lines.Bytes(), &r); err != nil {
				r.Status = -1
			}
		} else {
			r.Status = -1
		}
		cmd.Wait()
		done <- r
	}()
	return done
}

// TestLive1WithheldHead: a relay that withholds a newer channel head (a
// real relay behind a proxy that drops head record 1 from what it sends
// some readers and passes every other record on) while the publisher
// changes its head mid-stream: the Go reader (proto.LiveReader) and the
// browser's (live.js under Node) fail at the first record after the
// withheld head, saying so, and hand out none of its bytes; beside them,
// readers of the honest path get the whole stream under both heads.
// Without node, the Node readers are left out unless MESHUP_REQUIRE_NODE
// is set.
func TestLive1WithheldHead(t *testing.T) {
	node, nerr := exec.LookPath("node")
	if nerr != nil && os.Getenv("MESHUP_REQUIRE_NODE") != "" {
		t.Fatalf("node: %v", nerr)
	}
	var dropped atomic.Int32
	wrap := func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Query().Get("withhold") == "head1" {
				w = &headDropWriter{ResponseWriter: w, seq: 1, dropped: &dropped}
			}
			h.ServeHTTP(w, r)
		})
	}
	m, id, k, pub := sealedOnWrappedRelay(t, wrap)
	a := m.Relays[0]
	m0, m1 := proto.LiveMeta{Type: "video/webm;codecs=vp8"}, proto.LiveMeta{Type: "video/webm;codecs=vp9", Name: "second.webm"}
	if err := pub.lw.Head(m0, []byte("init0")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the channel on the relay", 10*time.Second, func() bool { return a.LiveStats().BytesIn == pub.cw.n.Load() })
	loc := liveRedirect(t, m.URL, id, a.ID())
	honest := readSealed(t, loc, k, id)
	withheld := readSealed(t, loc+"&withhold=head1", k, id)
	readers := int64(2)
	var nodeHonest, nodeWithheld <-chan nodeLiveRead
	if nerr == nil {
		nodeHonest = startNodeLiveReader(t, node, loc, k, id)
		nodeWithheld = startNodeLiveReader(t, node, loc+"&withhold=head1", k, id)
		readers += 2
	} else {
		t.Logf("no node (%v): the Go readers only", nerr)
	}
	waitFor(t, "the readers", 30*time.Second, func() bool { return a.LiveStats().Subscribers == readers })
	// Head 0's records, the new head (a new recorder), head 1's records.
	pub.lw.Sync([]byte("A;"))
	pub.lw.Write([]byte("a1;"))
	if err := pub.lw.Head(m1, []byte("init1")); err != nil {
		t.Fatal(err)
	}
	pub.lw.Sync([]byte("B;"))
	pub.lw.Write([]byte("b1;"))
	if err := pub.lw.Close(); err != nil {
		t.Fatal(err)
	}
	pub.pw.Close()
	if err := <-pub.done; err != nil {
		t.Fatal(err)
	}

	honest.wait(t)
	if honest.err != nil || honest.out.String() != "A;a1;B;b1;" || honest.heads != 2 || honest.head.Seq != 1 || honest.head.Meta != m1 || string(honest.head.Init) != "init1" {
		t.Errorf("honest reader: %q, %d heads, latest %+v, %v; want A;a1;B;b1; under heads 0 and 1", honest.out.String(), honest.heads, honest.head, honest.err)
	}
	withheld.wait(t)
	const why = "sync record 2 does not open under head 0: a relay changed it or withheld a newer channel head, or it is of another channel or key"
	var re *proto.LiveRecordError
	if !errors.Is(withheld.err, proto.ErrLiveIntegrity) || !errors.As(withheld.err, &re) || re.Seq != 2 || re.Head != 0 || withheld.err.Error() != why {
		t.Errorf("reader with head 1 withheld: error %v; want %q", withheld.err, why)
	}
	if withheld.out.String() != "A;a1;" || withheld.heads != 1 || withheld.head.Seq != 0 {
		t.Errorf("reader with head 1 withheld: handed out %q under %d heads (latest %d); want A;a1; under head 0 only, nothing of B;", withheld.out.String(), withheld.heads, withheld.head.Seq)
	}
	wantDropped := int32(1)
	if nerr == nil {
		wantDropped = 2
		for name, c := range map[string]<-chan nodeLiveRead{"honest": nodeHonest, "withheld": nodeWithheld} {
			var r nodeLiveRead
			select {
			case r = <-c:
			case <-time.After(time.Minute):
				t.Fatalf("node %s reader did not end", name)
			}
			if r.Status != http.StatusOK {
				t.Errorf("node %s reader: status %d", name, r.Status)
				continue
			}
			if name == "honest" {
				if r.Err != nil || r.Out != "A;a1;B;b1;" || len(r.Heads) != 2 || r.Heads[1].Seq != 1 || r.Heads[1].Init != "init1" || r.Heads[1].Type != m1.Type {
					t.Errorf("node honest reader: %+v; want A;a1;B;b1; under heads 0 and 1", r)
				}
				continue
			}
			if r.Err == nil || r.Err.Kind != "integrity" || r.Err.Seq != 2 || r.Err.Head != 0 || r.Err.Message != why || r.Out != "A;a1;" || len(r.Heads) != 1 {
				t.Errorf("node reader with head 1 withheld: %+v (err %+v); want A;a1; and then integrity at record 2 under head 0: %q", r, r.Err, why)
			}
		}
	}
	if n := dropped.Load(); n != wantDropped {
		t.Errorf("the proxy dropped %d heads, want %d (one per hostile reader)", n, wantDropped)
	}
}
