import unittest

from textkit.cipher import caesar


class CaesarTest(unittest.TestCase):
    def test_shift_keeps_case_and_punctuation(self):
        self.assertEqual(caesar("Hello, World!", 3), "Khoor, Zruog!")

    def test_wraps_around(self):
        self.assertEqual(caesar("xyz", 3), "abc")

    def test_negative_shift_decodes(self):
        self.assertEqual(caesar(caesar("Agents", 11), -11), "Agents")
