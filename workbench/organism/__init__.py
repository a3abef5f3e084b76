"""The embedded model organism: small trained GPT-NeoX / GPT-Neo models that really memorize."""
