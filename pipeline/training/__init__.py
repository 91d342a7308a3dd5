"""Training the siamese encoder (`teaprint train`)."""
