package httpapi

import (
	"net/http"
	"strconv"

	"github.com/parleyhq/parley/calls"
	"github.com/parleyhq/parley/internal/errs"
	"github.com/parleyhq/parley/voice/twilio"
)

// Handlers for Twilio: its voice webhook (POST /inbound_call), the status callbacks
// of calls placed through its REST API, the media stream websocket the TwiML points
// it at, and <Connect>'s action URL (what next once Parley ends a stream: a transfer
// or a hang-up). Twilio sends no bearer token: webhooks are authenticated by
// X-Twilio-Signature, checked against the URL Twilio called (PARLEY_PUBLIC_URL plus
// the request's path and query, so behind a proxy PARLEY_PUBLIC_URL must be the URL
// Twilio is configured with), and the media websocket by the signed token in its
// path. None of these routes is rate-limited per IP: every request comes from
// Twilio's few addresses, and each is authenticated before it touches the database.

var (
	errTwilioAbsent = errs.New(errs.KindUnavailable, "twilio_not_configured",
		"Twilio is not configured on this server (set PARLEY_TWILIO_ACCOUNT_SID and PARLEY_TWILIO_AUTH_TOKEN)")
	errTwilioSignature = errs.Forbidden("invalid_twilio_signature", "Missing or invalid X-Twilio-Signature")
)

// twilioWebhook returns the bridge and the request's form once its signature holds.
func (s *Server) twilioWebhook(r *http.Request) (*calls.Twilio, error) {
	tw := s.deps.Twilio
	if tw == nil {
		return nil, errTwilioAbsent
	}
	if err := r.ParseForm(); err != nil {
		return nil, errs.BadRequest("bad_form", "Body must be application/x-www-form-urlencoded")
	}
	// PostForm only: the query string is part of the signed URL already.
	if !tw.ValidSignature(r.URL.RequestURI(), r.PostForm, r.Header.Get(twilio.SignatureHeader)) {
		return nil, errTwilioSignature
	}
	return tw, nil
}

func (s *Server) handleTwilioInbound(w http.ResponseWriter, r *http.Request) error {
	tw, err := s.twilioWebhook(r)
	if err != nil {
		return err
	}
	f := r.PostForm
	doc, err := tw.Inbound(r.Context(), calls.TwilioInbound{
		CallSID: f.Get("CallSid"), AccountSID: f.Get("AccountSid"), From: f.Get("From"), To: f.Get("To"),
	})
	if err != nil {
		return err
	}
	writeTwiML(w, doc)
	return nil
}

func (s *Server) handleTwilioStatus(w http.ResponseWriter, r *http.Request) error {
	tw, err := s.twilioWebhook(r)
	if err != nil {
		return err
	}
	f := r.PostForm
	dur, _ := strconv.Atoi(f.Get("CallDuration"))
	if err := tw.Status(r.Context(), r.PathValue("id"), calls.TwilioStatus{
		CallSID: f.Get("CallSid"), CallStatus: f.Get("CallStatus"), CallDuration: dur,
	}); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *Server) handleTwilioConnectEnded(w http.ResponseWriter, r *http.Request) error {
	tw, err := s.twilioWebhook(r)
	if err != nil {
		return err
	}
	doc, err := tw.ConnectEnded(r.Context(), r.PathValue("id"), r.PostForm.Get("CallSid"))
	if err != nil {
		return err
	}
	writeTwiML(w, doc)
	return nil
}

// writeTwiML answers Twilio with a TwiML document.
func writeTwiML(w http.ResponseWriter, doc []byte) {
	w.Header().Set("Content-Type", "text/xml; charset=utf-8")
	w.WriteHeader(http.StatusOK)
	w.Write(doc)
}

func (s *Server) handleTwilioMedia(w http.ResponseWriter, r *http.Request) error {
	tw := s.deps.Twilio
	if tw == nil {
		return errTwilioAbsent
	}
	return tw.ServeMedia(w, r, r.PathValue("token"))
}
