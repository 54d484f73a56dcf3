// Package cliconftest runs a binary's main in a real process from its own
// test binary, to check exit statuses and output (-h, --version).
package cliconftest

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// envMain, set to 1, makes a test binary run main (see Main).
const envMain = "MESHUP_TEST_RUN_MAIN"

// Main runs main instead of the tests when the test binary was started by
// Command; else it runs the tests. Call it from TestMain.
func Main(m *testing.M, main func()) {
	if os.Getenv(envMain) == "1" {
		main()
		return
	}
	os.Exit(m.Run())
}

// Command returns a command running the package's main with args, in a
// process of the test binary (its TestMain calls Main).
func Command(args ...string) *exec.Cmd {
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), envMain+"=1")
	return cmd
}

// Case is one run of main: its argument and what it must do.
type Case struct {
	Arg      string
	WantOut  string // contained in stdout
	WantErr  string // contained in stderr
	WantCode int    // exit status
}

// Check runs main once per case and checks exit status and output.
func Check(t *testing.T, cases []Case) {
	for _, tc := range cases {
		t.Run(tc.Arg, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			cmd := Command(tc.Arg)
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			code := 0
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				code = ee.ExitCode()
			} else if err != nil {
				t.Fatal(err)
			}
			if code != tc.WantCode {
				t.Errorf("got exit status %d, want %d; stderr %q", code, tc.WantCode, stderr.String())
			}
			if !strings.Contains(stdout.String(), tc.WantOut) || !strings.Contains(stderr.String(), tc.WantErr) {
				t.Errorf("got stdout %q, stderr %.200q; want %q and %q in them", stdout.String(), stderr.String(), tc.WantOut, tc.WantErr)
			}
		})
	}
}
