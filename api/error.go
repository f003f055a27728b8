package api

// ErrorResponse is the body of every error answer of tkms (and of
// tkms sidecar): {"error":{"code":"...","message":"..."}}. Code is also
// in the x-ms-kms-error-code header; Message is safe to show the caller.
type ErrorResponse struct {
	Error Error `json:"error"`
}

// Error is the error of an ErrorResponse.
type Error struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}
