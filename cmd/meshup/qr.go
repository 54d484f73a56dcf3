package main

import (
	"fmt"
	"io"
	"strings"

	qrcode "github.com/skip2/go-qrcode"
)

// printQR prints text as a QR code for a terminal: two modules per
// character cell with half blocks, dark on light whatever the terminal's
// colours (ANSI black on white), with the quiet zone around it that
// scanners need.
func printQR(w io.Writer, text string) error {
	q, err := qrcode.New(text, qrcode.Medium)
	if err != nil {
		return fmt.Errorf("qr code: %w", err)
	}
	_, err = io.WriteString(w, renderQR(q.Bitmap()))
	return err
}

// renderQR renders a module bitmap (true is dark), two rows per line.
func renderQR(bm [][]bool) string {
	const on, off = "\033[30;47m", "\033[0m"
	var b strings.Builder
	for y := 0; y < len(bm); y += 2 {
		b.WriteString(on)
		for x := range bm[y] {
			top := bm[y][x]
			bottom := y+1 < len(bm) && bm[y+1][x]
			switch {
			case top && bottom:
				b.WriteString("█")
			case top:
				b.WriteString("▀")
			case bottom:
				b.WriteString("▄")
			default:
				b.WriteString(" ")
			}
		}
		b.WriteString(off + "\n")
	}
	return b.String()
}
