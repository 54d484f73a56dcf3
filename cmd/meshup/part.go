package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/meshup/meshup/proto"
)

// partRecord is what `meshup get` keeps beside a partial download
// NAME.part, in NAME.part.meshup, so that it resumes NAME.part only with
// bytes of the same item (and version):
//
//	{
//	  "version": 1,
//	  "item": "c4qyaex3an27tmxufbc4tyusde",
//	  "size": 1048576,               (the item's size, plaintext when encrypted)
//	  "encrypted": true,
//	  "etag": "\"c4qy...-0\""       (the validator the bytes are of; resumed with If-Range)
//	}
//
// A NAME.part without its record, or with a record of another item, is
// not touched unless --force says to start over.
type partRecord struct {
	Version   int          `json:"version"`
	Item      proto.ItemID `json:"item"`
	Size      int64        `json:"size"`
	Encrypted bool         `json:"encrypted"`
	ETag      string       `json:"etag,omitempty"`
}

const partRecordVersion = 1

// partSuffix and recordSuffix name a download's files: NAME.part holds
// the bytes until they are all there, NAME.part.meshup what they are of.
const (
	partSuffix   = ".part"
	recordSuffix = ".part.meshup"
)

// loadPartRecord reads the record at path; a missing file is (nil, nil).
func loadPartRecord(path string) (*partRecord, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var r partRecord
	if err := json.Unmarshal(b, &r); err != nil || r.Version != partRecordVersion {
		return nil, fmt.Errorf("%s is not a meshup download record", path)
	}
	return &r, nil
}

// save writes r to path atomically (a temporary file renamed over it).
func (r *partRecord) save(path string) error {
	r.Version = partRecordVersion
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// item describes the item a download is of, as far as resuming goes.
type item struct {
	ID        proto.ItemID
	Size      int64 // plaintext
	Encrypted bool
	Name      string
}

// preparePart checks what is on disk before downloading it to file
// (through file.part) and returns the validator to resume file.part with
// ("" when it starts empty). It refuses to overwrite file, and to resume a
// file.part that is not of it, unless force is set; then it starts over.
// It leaves file.part.meshup recording it.
func preparePart(file string, it item, force bool) (ifRange string, err error) {
	part, recPath := file+partSuffix, file+recordSuffix
	if fi, err := os.Stat(file); err == nil {
		if !fi.Mode().IsRegular() {
			return "", fmt.Errorf("%s exists and is not a regular file", file)
		}
		if !force {
			return "", fmt.Errorf("%s exists; not overwriting it (use -o to choose another name, or --force to replace it)", file)
		}
	}
	rec, recErr := loadPartRecord(recPath)
	pfi, err := os.Stat(part)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		// A fresh download.
	case err != nil:
		return "", err
	case !pfi.Mode().IsRegular():
		return "", fmt.Errorf("%s exists and is not a regular file", part)
	case force:
		if err := os.Truncate(part, 0); err != nil {
			return "", err
		}
	case recErr != nil:
		return "", fmt.Errorf("%w; not resuming %s (remove both, or --force to start over)", recErr, part)
	case rec == nil:
		return "", fmt.Errorf("%s exists but meshup get did not write it (no %s); not resuming onto it (remove it, or --force to start over)", part, filepath.Base(recPath))
	case rec.Item != it.ID || rec.Size != it.Size || rec.Encrypted != it.Encrypted:
		return "", fmt.Errorf("%s is a partial download of another item (%s, %d bytes), not of %s (%d bytes); not resuming onto it (remove it, or --force to start over)", part, rec.Item, rec.Size, it.ID, it.Size)
	case pfi.Size() > it.Size:
		return "", fmt.Errorf("%s has %d bytes, more than the item's %d; not resuming onto it (remove it, or --force to start over)", part, pfi.Size(), it.Size)
	case rec.ETag == "" && pfi.Size() > 0:
		// No validator to resume with: the bytes cannot be vouched for.
		if err := os.Truncate(part, 0); err != nil {
			return "", err
		}
	default:
		ifRange = rec.ETag
	}
	r := &partRecord{Item: it.ID, Size: it.Size, Encrypted: it.Encrypted, ETag: ifRange}
	if err := r.save(recPath); err != nil {
		return "", fmt.Errorf("download record: %w", err)
	}
	return ifRange, nil
}
