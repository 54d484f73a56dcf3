package main

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	qrcode "github.com/skip2/go-qrcode"

	"github.com/meshup/meshup/client"
	"github.com/meshup/meshup/mesh/meshtest"
	"github.com/meshup/meshup/proto"
)

// TestSendShowsDownloads: send with two files and --qr prints a QR code
// per link, the bytes pushed per file, and "download complete" for the
// file that was downloaded, not for the other.
func TestSendShowsDownloads(t *testing.T) {
	m := startMesh(t, nil)
	dir := t.TempDir()
	data := meshtest.RandomBytes(3*proto.E2EChunkSize+5, 5)
	s := startSend(t, 2, writeFile(t, dir, "one.bin", data), "--qr", writeFile(t, dir, "two.bin", data[:10]), "--rendezvous", m.URL)
	if n := strings.Count(s.stderr.String(), "▀"); n == 0 {
		t.Errorf("no QR code on stderr:\n%s", s.stderr)
	}
	out := filepath.Join(t.TempDir(), "one.bin")
	if _, stderr, err := get(t, s.links[0], "-o", out); err != nil {
		t.Fatalf("%v; stderr:\n%s", err, stderr)
	}
	checkFile(t, out, data)
	select {
	case <-s.stderr.appeared("one.bin: download complete"):
	case <-time.After(time.Minute):
		t.Fatalf("send did not report the download:\n%s", s.stderr)
	}
	if err := s.stop(); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(s.stderr.String(), "two.bin: download complete") {
		t.Errorf("send reports a download of two.bin, which nobody fetched:\n%s", s.stderr)
	}
	wire, _ := proto.E2ECipherSize(int64(len(data)))
	if want := "one.bin: pushed " + client.FormatBytes(wire); !strings.Contains(s.stderr.String(), want) {
		t.Errorf("stderr lacks %q:\n%s", want, s.stderr)
	}
}

// TestRenderQR reads the modules back from the half blocks.
func TestRenderQR(t *testing.T) {
	for _, text := range []string{"x", "http://127.0.0.1:8080/i/c4qyaex3an27tmxufbc4tyusde#k=" + strings.Repeat("A", 43)} {
		q, err := qrcode.New(text, qrcode.Medium)
		if err != nil {
			t.Fatal(err)
		}
		want := q.Bitmap()
		var got [][]bool
		for _, line := range strings.Split(strings.TrimSuffix(renderQR(want), "\n"), "\n") {
			line = strings.TrimSuffix(strings.TrimPrefix(line, "\033[30;47m"), "\033[0m")
			top, bottom := []bool{}, []bool{}
			for _, r := range line {
				top = append(top, r == '█' || r == '▀')
				bottom = append(bottom, r == '█' || r == '▄')
			}
			got = append(got, top, bottom)
		}
		got = got[:len(want)] // an odd last row is drawn with a light lower half
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("%q: rendered modules differ from the code's", text)
		}
	}
}

// TestAddRange merges pushed ranges.
func TestAddRange(t *testing.T) {
	for _, tc := range []struct {
		add  [][2]int64
		want string
	}{
		{[][2]int64{{0, 10}}, "[{0 10}]"},
		{[][2]int64{{10, 20}, {0, 10}}, "[{0 20}]"},
		{[][2]int64{{0, 5}, {10, 20}}, "[{0 5} {10 20}]"},
		{[][2]int64{{0, 5}, {10, 20}, {30, 40}, {4, 31}}, "[{0 40}]"},
		{[][2]int64{{10, 20}, {12, 15}}, "[{10 20}]"},
		{[][2]int64{{30, 40}, {0, 5}, {6, 8}}, "[{0 5} {6 8} {30 40}]"},
	} {
		var rs []byteRange
		for _, a := range tc.add {
			rs = addRange(rs, byteRange{a[0], a[1]})
		}
		if got := fmt.Sprint(rs); got != tc.want {
			t.Errorf("%v: got %s, want %s", tc.add, got, tc.want)
		}
	}
}
