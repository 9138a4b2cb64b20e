"""userlens: learn who each user is from what they did."""

__version__ = "0.1.0"
