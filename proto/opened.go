package proto

import "io"

// openedReader hands out authenticated plaintext that openNext opens one
// chunk or record at a time: the Read and WriteTo of E2EReader (items)
// and LiveReader (live channels).
type openedReader struct {
	plain    []byte       // authenticated plaintext not yet handed out
	err      error        // what openNext returned last; io.EOF at a clean end
	openNext func() error // opens the next chunk or record into plain
}

// Read implements io.Reader.
func (r *openedReader) Read(p []byte) (int, error) {
	for len(r.plain) == 0 {
		if r.err != nil {
			return 0, r.err
		}
		r.err = r.openNext()
	}
	n := copy(p, r.plain)
	r.plain = r.plain[n:]
	return n, nil
}

// WriteTo implements io.WriterTo, handing each chunk's or record's
// plaintext to w in one Write, as it comes, without copying.
func (r *openedReader) WriteTo(w io.Writer) (int64, error) {
	var total int64
	for {
		if len(r.plain) > 0 {
			n, err := w.Write(r.plain)
			total += int64(n)
			r.plain = r.plain[n:]
			if err != nil {
				return total, err
			}
		}
		if r.err != nil {
			if r.err == io.EOF {
				return total, nil
			}
			return total, r.err
		}
		r.err = r.openNext()
	}
}
