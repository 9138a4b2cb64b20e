"""One router per resource; ``userlens.serving.app.create_app`` wires them."""
