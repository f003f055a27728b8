package release

import (
	"context"
	"encoding/json"
	"os"
	"reflect"
	"testing"

	"github.com/tkms-dev/tkms/api"
	"github.com/tkms-dev/tkms/internal/attest"
	"github.com/tkms-dev/tkms/internal/attest/snp"
)

// onePassBodies are /app and /v1 bodies around the real ACI sample: the
// real ones, and the edge cases where a one-pass decoding could differ
// from the long way (duplicate or case-folded attestation members, escaped
// names, other formats, strings holding objects, type errors).
func onePassBodies(t testing.TB) (app, v1 [][]byte) {
	ev, err := os.ReadFile(aciSample)
	if err != nil {
		t.Fatal(err)
	}
	var aci map[string]any
	if err := json.Unmarshal(ev, &aci); err != nil {
		t.Fatal(err)
	}
	pem, err := os.ReadFile(wrapPublicPEM)
	if err != nil {
		t.Fatal(err)
	}
	pemJSON, _ := json.Marshal(string(pem))
	evJSON := string(ev)
	evString, _ := json.Marshal(evJSON)
	with := func(k string, v any) string {
		m := map[string]any{}
		for kk, vv := range aci {
			m[kk] = vv
		}
		if v == nil {
			delete(m, k)
		} else {
			m[k] = v
		}
		b, _ := json.Marshal(m)
		return string(b)
	}
	atts := []string{
		evJSON,
		string(evString), // a string holding the object
		`{}`, `null`, `""`, `"{}"`, `[]`, `5`,
		with("type", "snp"), with("type", "tdx"), with("type", "maa"), with("type", "other"), with("type", 5), with("type", nil),
		with("hcl_report", "AAAA"), with("report", nil), with("Quote", "x"), with("tpm_quote", json.RawMessage("null")),
		with("evidence", ""), with("evidence", 5), with("evidence", "not base64!"), with("evidence", "AAAA"),
		with("endorsements", ""), with("uvm_endorsements", ""), with("endorsed_tcb", "zz"), with("endorsed_tcb", 7),
		with("EVIDENCE", aci["evidence"]), with("extra", 1),
		`{"evidence":"AAAA"}`,
	}
	names := []string{`"attestation"`, `"Attestation"`, `"ATTESTATION"`, `"attest\u0061tion"`, `"atteſtation"`}
	for _, att := range atts {
		for _, name := range names {
			app = append(app,
				[]byte(`{`+name+`:`+att+`,"wrappingKey":`+string(pemJSON)+`,"wrappedKid":"k_1","wrapped":""}`),
				[]byte(`{"wrappedKid":"k_1",`+name+`:`+att+`,"wrappingKey":`+string(pemJSON)+`}`),
			)
			v1 = append(v1,
				[]byte(`{"kids":["k_1"],`+name+`:`+att+`,"wrapping_key":{"type":"hpke","kem_id":32,"public_key":"AAAA"}}`),
				[]byte(`{`+name+`:`+att+`,"wrapping_key":{"type":"rsa","spki":"AAAA"},"nonce":"00"} `),
			)
		}
		// A second attestation member, before or after, in any case.
		for _, dup := range []string{`"attestation":{}`, `"ATTESTATION":{"endorsements":"AAAA"}`, `"attest\u0061tion":null`, `"Attestation":` + att} {
			app = append(app,
				[]byte(`{"attestation":`+att+`,`+dup+`,"wrappingKey":"x","wrappedKid":"k_1"}`),
				[]byte(`{`+dup+`,"attestation":`+att+`,"wrappingKey":"x","wrappedKid":"k_1"}`),
			)
			v1 = append(v1, []byte(`{"all_valid":true,"attestation":`+att+`,`+dup+`,"wrapping_key":{"type":"rsa","spki":"AAAA"}}`))
		}
	}
	app = append(app, []byte(`null`), []byte(`{"attestation":`+evJSON+`,"wrappingKey":5}`), []byte(`{"attestation":`+evJSON+`} {}`),
		[]byte(`{"attestation":`+evJSON+`,"wrappingKey":"\"attestation\""}`))
	v1 = append(v1, []byte(`{"attestation":`+evJSON+`} {}`), []byte(`{"attestation":`+evJSON+`,"unknown":1}`))
	return app, v1
}

// checkOnePass checks that when the one-pass decoding of body is taken, it
// finds what the long way finds: the same request and, for the attestation,
// the same members as the long way's bytes, which attest would also take
// for an ACI object.
func checkOnePass(t *testing.T, body []byte, v1 bool) (taken bool) {
	t.Helper()
	var once, raw any
	var att, rawAtt attestation
	var ok bool
	var err error
	if v1 {
		var r, rr *api.V1Request
		r, att, ok = decodeV1Once(body)
		rr, rawAtt, err = decodeV1Raw(body)
		if ok {
			rr.Attestation = nil
		}
		once, raw = r, rr
	} else {
		var r, rr *api.AppRequest
		r, att, ok = decodeAppOnce(body)
		rr, rawAtt, err = decodeAppRaw(body)
		if ok {
			rr.Attestation, rr.Wrapped = nil, nil
		}
		once, raw = r, rr
	}
	if !ok {
		return false
	}
	if err != nil {
		t.Fatalf("%.200s: one pass decoded what the long way refuses: %v", body, err)
	}
	if !reflect.DeepEqual(once, raw) {
		t.Fatalf("%.200s: one pass %+v, the long way %+v", body, once, raw)
	}
	if got := attest.Type(rawAtt.raw); got != attest.TypeACI {
		t.Fatalf("%.200s: one pass took an attestation of type %s for ACI", body, got)
	}
	var want api.ACI
	if err := json.Unmarshal(rawAtt.raw, &want); err != nil {
		t.Fatalf("%.200s: one pass decoded an ACI object the long way refuses: %v", body, err)
	}
	if *att.aci != want {
		t.Fatalf("%.200s: one pass decoded other ACI members than the long way", body)
	}
	return true
}

// TestOnePassDecoding compares the one-pass decoding of release bodies
// (decode.go) with the long way on the edge cases, and checks that the
// real requests take it. With the same ACI members, attest's VerifyACI and
// Verify give the same evidence or error (TestOnePassVerify).
func TestOnePassDecoding(t *testing.T) {
	app, v1 := onePassBodies(t)
	var taken int
	for _, b := range app {
		if checkOnePass(t, b, false) {
			taken++
		}
	}
	for _, b := range v1 {
		if checkOnePass(t, b, true) {
			taken++
		}
	}
	if taken == 0 || !checkOnePass(t, app[0], false) || !checkOnePass(t, v1[0], true) {
		t.Fatalf("the real bodies do not take the one-pass decoding (%d of %d bodies did)", taken, len(app)+len(v1))
	}
	t.Logf("%d of %d bodies decoded in one pass", taken, len(app)+len(v1))
}

// TestOnePassVerify checks that attest verifies the one-pass decoding's ACI
// members as it verifies the object's bytes: the same evidence, or the
// same error, for the real sample and broken variants of it.
func TestOnePassVerify(t *testing.T) {
	av, err := attest.New(attest.Config{})
	if err != nil {
		t.Fatal(err)
	}
	app, _ := onePassBodies(t)
	n := 0
	for _, b := range app {
		_, att, ok := decodeAppOnce(b)
		if !ok {
			continue
		}
		_, rawAtt, _ := decodeAppRaw(b)
		ev1, err1 := av.VerifyACI(context.Background(), att.aci)
		ev2, err2 := av.Verify(context.Background(), rawAtt.raw)
		if (err1 == nil) != (err2 == nil) || (err1 != nil && err1.Error() != err2.Error()) {
			t.Fatalf("%.200s: VerifyACI: %v; Verify: %v", b, err1, err2)
		}
		if !reflect.DeepEqual(ev1, ev2) {
			t.Fatalf("%.200s: VerifyACI and Verify give different evidence", b)
		}
		n++
	}
	if n < 5 {
		t.Fatalf("only %d bodies verified", n)
	}
}

// FuzzOnePassDecoding: whatever the body, the one-pass decoding is taken
// only when it finds what the long way finds.
func FuzzOnePassDecoding(f *testing.F) {
	app, v1 := onePassBodies(f)
	// The real bodies and the small ones: the fuzzer is slow on 25 KB.
	f.Add(app[0], false)
	f.Add(v1[0], true)
	for _, b := range app {
		if len(b) < 1500 {
			f.Add(b, false)
		}
	}
	for _, b := range v1 {
		if len(b) < 1500 {
			f.Add(b, true)
		}
	}
	f.Add([]byte(`{"attestation":{"evidence":"AAAA","endorsements":"AAAA"},"wrappingKey":"x","wrappedKid":"k"}`), false)
	f.Add([]byte(`{"kids":["a"],"attestation":{"evidence":"AAAA","endorsements":"AAAA"},"wrapping_key":{"type":"rsa"}}`), true)
	f.Add([]byte(`{"attestation":{"evidence":"AAAA"},"wrappingKey":"\\\"attestation\\\""}`), false)
	f.Fuzz(func(t *testing.T, body []byte, v1 bool) {
		if len(body) > 1<<20 {
			return
		}
		checkOnePass(t, body, v1)
	})
}

// BenchmarkDecodeAttestation compares the two ways a release body's
// attestation reaches verification (decode.go): the long way (the body
// with the attestation as bytes, attest telling its format apart, then
// snp.DecodeACI) and the one-pass decoding (the body with the ACI members,
// then snp.DecodeACIMembers), on the real /app/unwrapKey body.
func BenchmarkDecodeAttestation(b *testing.B) {
	app, _ := onePassBodies(b)
	body := app[0]
	b.Run("long-way", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_, att, err := decodeAppRaw(body)
			if err != nil || attest.Type(att.raw) != attest.TypeACI {
				b.Fatal(err)
			}
			if _, err := snp.DecodeACI(att.raw); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("one-pass", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_, att, ok := decodeAppOnce(body)
			if !ok {
				b.Fatal("not decoded in one pass")
			}
			if _, err := snp.DecodeACIMembers(att.aci); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func TestOnlyMember(t *testing.T) {
	for _, c := range []struct {
		body string
		want bool
	}{
		{`{"attestation":{}}`, true},
		{`{"attestation":{},"wrappingKey":"-----BEGIN PUBLIC KEY-----\nMIIB...\n-----END PUBLIC KEY-----\n-----------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------"}`, true},
		{`{}`, false},
		{`{"attestation":{},"attestation":{}}`, false},
		{`{"attestation":{},"ATTESTATION":{}}`, false},
		{`{"attestation":{},"Attestation":1}`, false},
		{`{"attestation":{},"atteſtation":{}}`, false}, // ſ folds to s
		{`{"attestation":{},"attest\u0061tion":{}}`, false},
		{`{"attestation":{},"x":"\"attestation\""}`, false}, // conservative: a short escaped string counts
		{`{"attestation":{"a":"attestation"}}`, false},      // conservative: values count too
		{`{"attest\u0061tion":{}}`, true},                   // the one spelling, escaped
	} {
		if got := onlyMember([]byte(c.body), attestationName); got != c.want {
			t.Errorf("onlyMember(%s) = %v, want %v", c.body, got, c.want)
		}
	}
}
