package httpapi

import "github.com/tkms-dev/tkms/api"

// errorBody is the JSON error shape the tests decode.
type errorBody = api.ErrorResponse
