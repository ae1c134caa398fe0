package telephony_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/parleyhq/parley/internal/errs"
	"github.com/parleyhq/parley/telephony"
	"github.com/parleyhq/parley/telephony/carrier"
)

// fakeTelnyx answers the four Telnyx API v2 calls the real adapter makes, in Telnyx's
// documented shapes (see telephony/carrier/telnyx_test.go for the sources), and
// remembers the numbers it sold and released.
type fakeTelnyx struct {
	srv      *httptest.Server
	mu       sync.Mutex
	offer    string            // what a search returns
	sold     map[string]string // number -> phone number ID
	released []string
	searches []string // the query strings
	// afterOrder, if set, runs after an order is filled.
	afterOrder func()
}

func newFakeTelnyx(t *testing.T, offer string) *fakeTelnyx {
	f := &fakeTelnyx{offer: offer, sold: map[string]string{}}
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeTelnyx) serve(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	if r.Header.Get("Authorization") != "Bearer KEY_test" {
		w.WriteHeader(401)
		fmt.Fprint(w, `{"errors":[{"code":"10009","title":"Authentication failed"}]}`)
		return
	}
	switch {
	case r.Method == "GET" && r.URL.Path == "/v2/available_phone_numbers":
		f.searches = append(f.searches, r.URL.RawQuery)
		fmt.Fprintf(w, `{"data":[{"record_type":"available_phone_number","phone_number":%q,
			"region_information":[{"region_type":"country_code","region_name":"US"},{"region_type":"location","region_name":"Boulder"}],
			"cost_information":{"upfront_cost":"1.00","monthly_cost":"1.00","currency":"USD"},
			"features":[{"name":"voice"}]}],"meta":{"total_results":1,"best_effort_results":0}}`, f.offer)
	case r.Method == "POST" && r.URL.Path == "/v2/number_orders":
		var body struct {
			PhoneNumbers []struct {
				PhoneNumber string `json:"phone_number"`
			} `json:"phone_numbers"`
		}
		json.NewDecoder(r.Body).Decode(&body)
		n := body.PhoneNumbers[0].PhoneNumber
		f.sold[n] = "pn-" + strings.TrimPrefix(n, "+")
		fmt.Fprintf(w, `{"data":{"id":"order-1","record_type":"number_order","phone_numbers_count":1,
			"phone_numbers":[{"id":"line-1","record_type":"number_order_phone_number","phone_number":%q,"status":"success"}],
			"status":"success","requirements_met":true}}`, n)
		if f.afterOrder != nil {
			f.afterOrder()
		}
	case r.Method == "GET" && r.URL.Path == "/v2/phone_numbers":
		digits := r.URL.Query().Get("filter[phone_number]")
		id, ok := f.sold["+"+digits]
		if !ok {
			fmt.Fprint(w, `{"data":[],"meta":{"total_results":0}}`)
			return
		}
		fmt.Fprintf(w, `{"data":[{"id":%q,"record_type":"phone_number","phone_number":"+%s","status":"active"}],"meta":{"total_results":1}}`, id, digits)
	case r.Method == "DELETE" && strings.HasPrefix(r.URL.Path, "/v2/phone_numbers/"):
		id := strings.TrimPrefix(r.URL.Path, "/v2/phone_numbers/")
		for n, x := range f.sold {
			if x == id {
				delete(f.sold, n)
				f.released = append(f.released, n)
				fmt.Fprintf(w, `{"data":{"id":%q,"record_type":"phone_number","phone_number":%q,"status":"deleted"}}`, id, n)
				return
			}
		}
		w.WriteHeader(404)
		fmt.Fprint(w, `{"errors":[{"code":"10005","title":"Resource not found"}]}`)
	default:
		w.WriteHeader(404)
		fmt.Fprint(w, `{"errors":[{"code":"10005","title":"Resource not found"}]}`)
	}
}

// Buying goes through the real Telnyx adapter: a search when no number is named, the
// order, and a row that remembers the carrier, so deleting it releases the number.
func TestBuy(t *testing.T) {
	t.Parallel()
	offer := number()
	fake := newFakeTelnyx(t, offer)
	tx, err := carrier.NewTelnyx(carrier.TelnyxConfig{APIKey: "KEY_test", BaseURL: fake.srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, tx)
	ctx := context.Background()
	tenant := e.tenant()
	tr := e.trunk(tenant, telephony.TrunkInput{InboundAddresses: &[]string{"127.0.0.1"}})

	p, err := e.svc.Buy(ctx, tenant, telephony.BuyInput{Provider: "telnyx", AreaCode: "303", TrunkID: tr.ID})
	if err != nil {
		t.Fatal(err)
	}
	if p.Number != offer || p.Carrier != "telnyx" || p.CarrierNumberID != "pn-"+strings.TrimPrefix(offer, "+") || p.Provider != "sip" || *p.TrunkID != tr.ID {
		t.Fatalf("bought %+v", p)
	}
	if len(fake.searches) != 1 || !strings.Contains(fake.searches[0], "national_destination_code%5D=303") {
		t.Errorf("searches %v", fake.searches)
	}
	// A named number is ordered without a search.
	named := number()
	if _, err := e.svc.Buy(ctx, tenant, telephony.BuyInput{Provider: "telnyx", PhoneNumber: named, TrunkID: tr.ID}); err != nil {
		t.Fatal(err)
	}
	if len(fake.searches) != 1 {
		t.Errorf("a named number was searched for")
	}
	// Buying a number Parley already has is refused before anything is ordered.
	if _, err := e.svc.Buy(ctx, tenant, telephony.BuyInput{Provider: "telnyx", PhoneNumber: named, TrunkID: tr.ID}); !errors.Is(err, telephony.ErrNumberTaken) {
		t.Errorf("buy twice: %v", err)
	}

	if err := e.svc.DeleteNumber(ctx, tenant, offer); err != nil {
		t.Fatal(err)
	}
	if len(fake.released) != 1 || fake.released[0] != offer {
		t.Errorf("released %v", fake.released)
	}

	// A provider this server lacks, bad input and another tenant's trunk all fail
	// before anything is ordered.
	_, err = e.svc.Buy(ctx, tenant, telephony.BuyInput{Provider: "twilio"})
	wantKind(t, err, errs.KindInvalid, "provider")
	_, err = e.svc.Buy(ctx, tenant, telephony.BuyInput{Provider: "telnyx"})
	wantKind(t, err, errs.KindInvalid, "trunk_id")
	_, err = e.svc.Buy(ctx, tenant, telephony.BuyInput{Provider: "telnyx", PhoneNumber: "555", TrunkID: tr.ID})
	wantKind(t, err, errs.KindInvalid, "phone_number")
	if _, err := e.svc.Buy(ctx, e.tenant(), telephony.BuyInput{Provider: "telnyx", TrunkID: tr.ID}); !errors.Is(err, telephony.ErrTrunkNotFound) {
		t.Errorf("buy onto another tenant's trunk: %v", err)
	}
	if len(fake.sold) != 1 {
		t.Errorf("numbers held at the carrier: %v", fake.sold)
	}
}

// A number the carrier sold that cannot be stored is released at once.
func TestBuyCompensates(t *testing.T) {
	t.Parallel()
	offer := number()
	fake := newFakeTelnyx(t, offer)
	tx, err := carrier.NewTelnyx(carrier.TelnyxConfig{APIKey: "KEY_test", BaseURL: fake.srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, tx)
	ctx := context.Background()
	tenant := e.tenant()
	tr := e.trunk(tenant, telephony.TrunkInput{InboundAddresses: &[]string{"127.0.0.1"}})
	// The trunk is deleted (as a concurrent request would) while the carrier fills the
	// order, so storing the number fails after it was bought.
	fake.afterOrder = func() {
		if _, err := e.pool.Exec(context.Background(), `DELETE FROM sip_trunks WHERE id = $1`, tr.ID); err != nil {
			t.Error(err)
		}
	}
	_, err = e.svc.Buy(ctx, tenant, telephony.BuyInput{Provider: "telnyx", PhoneNumber: offer, TrunkID: tr.ID})
	if !errors.Is(err, telephony.ErrTrunkNotFound) {
		t.Fatalf("buy onto a vanished trunk: %v", err)
	}
	fake.mu.Lock()
	defer fake.mu.Unlock()
	if len(fake.released) != 1 || fake.released[0] != offer || len(fake.sold) != 0 {
		t.Errorf("sold %v, released %v: the order was not undone", fake.sold, fake.released)
	}
}
