package proto

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
)

func TestE2ESizes(t *testing.T) {
	for _, p := range []int64{0, 1, 15, 16, 17, E2EChunkSize - 1, E2EChunkSize, E2EChunkSize + 1, 3*E2EChunkSize + 5, 1 << 40} {
		s, err := E2ECipherSize(p)
		if err != nil {
			t.Fatalf("E2ECipherSize(%d): %v", p, err)
		}
		got, err := E2EPlainSize(s)
		if err != nil || got != p {
			t.Errorf("E2EPlainSize(E2ECipherSize(%d) = %d) = %d, %v, want %d", p, s, got, err, p)
		}
	}
	for _, p := range []int64{-1, E2EMaxChunks*E2EChunkSize + 1} {
		if _, err := E2ECipherSize(p); !errors.Is(err, ErrE2ESize) {
			t.Errorf("E2ECipherSize(%d): got %v, want ErrE2ESize", p, err)
		}
	}
	for _, s := range []int64{-1, 0, 15, E2ESealedChunkSize + 1, E2ESealedChunkSize + 16, E2EMaxChunks*E2ESealedChunkSize + 17, 1<<63 - 1} {
		if _, err := E2EPlainSize(s); !errors.Is(err, ErrE2ESize) {
			t.Errorf("E2EPlainSize(%d): got %v, want ErrE2ESize", s, err)
		}
	}
}

// TestE2ERanges reads every plaintext range of a small set through the
// ciphertext range E2ECipherRange names and checks the bytes.
func TestE2ERanges(t *testing.T) {
	k, id := NewE2EKey(), NewItemID()
	e := NewE2EItem(k, id)
	for _, p := range []int64{1, E2EChunkSize, 2*E2EChunkSize + 7, 3 * E2EChunkSize} {
		plain := vecPlain(p)
		ct := sealAll(e, plain)
		s := int64(len(ct))
		points := []int64{0, 1, E2EChunkSize - 1, E2EChunkSize, E2EChunkSize + 1, 2 * E2EChunkSize, p - 1}
		for _, a := range points {
			for _, b := range points {
				if a > b || b >= p || a < 0 {
					continue
				}
				off, end, chunk := E2ECipherRange(a, b, s)
				r, err := e.NewReader(bytes.NewReader(ct[off:end]), s, chunk, end)
				if err != nil {
					t.Fatalf("P=%d [%d,%d]: %v", p, a, b, err)
				}
				got, err := io.ReadAll(r)
				if err != nil {
					t.Fatalf("P=%d [%d,%d] cipher [%d,%d): %v", p, a, b, off, end, err)
				}
				skip := a - int64(chunk)*E2EChunkSize
				if int64(len(got)) < skip+b-a+1 || !bytes.Equal(got[skip:skip+b-a+1], plain[a:b+1]) {
					t.Fatalf("P=%d [%d,%d]: wrong bytes", p, a, b)
				}
			}
		}
	}
}

func TestE2EReaderWriteTo(t *testing.T) {
	k, id := NewE2EKey(), NewItemID()
	e := NewE2EItem(k, id)
	plain := vecPlain(5*E2EChunkSize + 100)
	ct := sealAll(e, plain)
	r, err := e.NewReader(bytes.NewReader(ct), int64(len(ct)), 0, int64(len(ct)))
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if n, err := io.Copy(&out, r); err != nil || n != int64(len(plain)) || !bytes.Equal(out.Bytes(), plain) {
		t.Fatalf("copy: n=%d err=%v equal=%v", n, err, bytes.Equal(out.Bytes(), plain))
	}
	// Tampered: WriteTo stops at the bad chunk and writes nothing of it.
	ct[3*E2ESealedChunkSize+5] ^= 0x80
	r, _ = e.NewReader(bytes.NewReader(ct), int64(len(ct)), 0, int64(len(ct)))
	out.Reset()
	n, err := io.Copy(&out, r)
	var ce *E2EChunkError
	if !errors.As(err, &ce) || ce.Chunk != 3 || !errors.Is(err, ErrE2EIntegrity) {
		t.Fatalf("got %v, want an integrity error at chunk 3", err)
	}
	if n != 3*E2EChunkSize || !bytes.Equal(out.Bytes(), plain[:n]) {
		t.Fatalf("wrote %d bytes, want %d good ones", n, 3*E2EChunkSize)
	}
	if _, err2 := r.Read(make([]byte, 1)); !errors.Is(err2, ErrE2EIntegrity) {
		t.Fatalf("read after failure: %v, want the same error", err2)
	}
}

func TestE2EReaderBadRun(t *testing.T) {
	e := NewE2EItem(NewE2EKey(), NewItemID())
	s, _ := E2ECipherSize(3 * E2EChunkSize)
	for _, c := range []struct {
		s, end int64
		chunk  uint64
	}{{15, 15, 0}, {s, s + 1, 0}, {s, 5, 0}, {s, E2ESealedChunkSize, 2}, {s, -1, 0}, {s, s, 4}} {
		if _, err := e.NewReader(bytes.NewReader(nil), c.s, c.chunk, c.end); !errors.Is(err, ErrE2ESize) {
			t.Errorf("NewReader(s=%d, chunk=%d, end=%d): got %v, want ErrE2ESize", c.s, c.chunk, c.end, err)
		}
	}
}

func TestE2EMeta(t *testing.T) {
	e := NewE2EItem(NewE2EKey(), NewItemID())
	m := E2EMeta{Name: "a <b> & \"c\".txt", Type: "text/plain", Modified: 1700000000}
	s, err := e.SealMeta(m)
	if err != nil {
		t.Fatal(err)
	}
	s2, _ := e.SealMeta(m)
	if s == s2 {
		t.Error("two seals of the same metadata are equal; want fresh nonces")
	}
	got, err := e.OpenMeta(s)
	if err != nil || got != m {
		t.Fatalf("OpenMeta: %+v, %v", got, err)
	}
	long := E2EMeta{Name: string(bytes.Repeat([]byte("x"), E2EMaxMeta))}
	if _, err := e.SealMeta(long); !errors.Is(err, ErrE2EMeta) {
		t.Errorf("SealMeta of a long name: %v, want ErrE2EMeta", err)
	}
	for _, bad := range []string{"", "!!", "AAAA", s + "A", string(bytes.Repeat([]byte("A"), E2EMaxMeta+4))} {
		if _, err := e.OpenMeta(bad); !errors.Is(err, ErrE2EMeta) {
			t.Errorf("OpenMeta(%.20q): %v, want ErrE2EMeta", bad, err)
		}
	}
}

func TestE2EFragmentRoundTrip(t *testing.T) {
	k := NewE2EKey()
	got, found, err := ParseE2EFragment("#" + k.Fragment())
	if err != nil || !found || got != k {
		t.Fatalf("ParseE2EFragment: %v %v %v", got, found, err)
	}
}

// FuzzE2EReader feeds arbitrary ciphertext, with an arbitrary claimed size
// and starting chunk, to the decoder: it must never panic, never hand out a
// byte that was not sealed for that position, and fail with an
// *E2EChunkError or ErrE2ESize on anything that is not genuine.
func FuzzE2EReader(f *testing.F) {
	k, id := vecKey(), vecItem()
	e := NewE2EItem(k, id)
	for _, p := range []int64{0, 1, 100, E2EChunkSize + 3} {
		ct := sealAll(e, vecPlain(p))
		f.Add(ct, int64(len(ct)), uint64(0))
		f.Add(ct[:len(ct)/2], int64(len(ct)), uint64(0))
	}
	f.Add([]byte{}, int64(16), uint64(0))
	f.Fuzz(func(t *testing.T, ct []byte, s int64, chunk uint64) {
		r, err := e.NewReader(bytes.NewReader(ct), s, chunk, s)
		if err != nil {
			if !errors.Is(err, ErrE2ESize) {
				t.Fatalf("NewReader: %v", err)
			}
			return
		}
		got, err := io.ReadAll(r)
		if err != nil {
			var ce *E2EChunkError
			if !errors.As(err, &ce) {
				t.Fatalf("got %v, want an *E2EChunkError", err)
			}
		}
		// Whatever came out must be the vector plaintext at that offset:
		// nothing else was ever sealed under this key and item.
		base := int64(chunk) * E2EChunkSize
		for j, b := range got {
			if b != byte((base+int64(j))%251) {
				t.Fatalf("reader handed out byte %d that was never sealed there", j)
			}
		}
	})
}

// FuzzE2EMeta opens arbitrary sealed metadata: no panic, and only
// ErrE2EMeta on failure.
func FuzzE2EMeta(f *testing.F) {
	e := NewE2EItem(vecKey(), vecItem())
	var nonce [12]byte
	s, _ := e.sealMeta(E2EMeta{Name: "a.txt", Type: "text/plain", Modified: 1}, nonce)
	f.Add(s)
	f.Add("")
	f.Add("AAAA")
	f.Fuzz(func(t *testing.T, s string) {
		if _, err := e.OpenMeta(s); err != nil && !errors.Is(err, ErrE2EMeta) {
			t.Fatalf("OpenMeta: %v, want ErrE2EMeta", err)
		}
	})
}

// FuzzE2EFragment parses arbitrary link fragments: no panic, a key only
// from exactly one canonical k parameter, ErrE2EKey otherwise.
func FuzzE2EFragment(f *testing.F) {
	f.Add("#" + vecKey().Fragment())
	f.Add("k=&k=")
	f.Add("x=1&k=AAAA")
	f.Fuzz(func(t *testing.T, s string) {
		k, found, err := ParseE2EFragment(s)
		if err != nil && !errors.Is(err, ErrE2EKey) {
			t.Fatalf("ParseE2EFragment: %v", err)
		}
		if found && err == nil && !strings.Contains(s, k.Fragment()) {
			t.Fatalf("key %s not in %q", k, s)
		}
	})
}

// BenchmarkE2ESeal and BenchmarkE2EOpen measure one core sealing and
// opening full chunks in place.
func BenchmarkE2ESeal(b *testing.B) {
	e := NewE2EItem(NewE2EKey(), NewItemID())
	buf := make([]byte, E2ESealedChunkSize)
	b.SetBytes(E2EChunkSize)
	for i := range b.N {
		e.SealChunk(buf[:0], buf[:E2EChunkSize], uint64(i), false)
	}
}

func BenchmarkE2EOpen(b *testing.B) {
	e := NewE2EItem(NewE2EKey(), NewItemID())
	plain := make([]byte, E2EChunkSize)
	sealed := e.SealChunk(nil, plain, 7, false)
	buf := make([]byte, len(sealed))
	b.SetBytes(E2EChunkSize)
	for range b.N {
		copy(buf, sealed)
		if _, err := e.OpenChunk(buf[:0], buf, 7, false); err != nil {
			b.Fatal(err)
		}
	}
}
