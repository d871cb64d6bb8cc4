"""pii-tagger: a character-level span tagger (dilated 1-D CNN) for personal data in text.

Input `codepoints` INT32 [batch, 256] (as for language-id); output `tags` FP32
[batch, 256, 8]: for every character position a probability over
O, EMAIL, PHONE, IBAN, CARD, IP, DATE, ID-NUMBER (positions past the text's end are
padding; the model was trained to call them O, but callers should ignore them).

Model: character ids (lookup table) -> embedding (24) -> four 1-D convolutions of width 5
with dilations 1, 2, 4, 8 (48 channels, ReLU, residual connections from the second on;
receptive field 61 characters) -> 1x1 convolution to the 8 tags -> softmax. Trained here
in float64 numpy with hand-written backpropagation (Adam, fixed seed) on sentences
generated from templates with synthetic personal data (valid IBAN check digits, Luhn-valid
card numbers, ...). Nothing real about any person is in the data.
"""

from __future__ import annotations

import random
import re
import string

import numpy as np

from standalone_common import DATA, FLOAT, INT32, SEQ, Adam, Graph, rounded, softmax, vi

TAGS = ["O", "EMAIL", "PHONE", "IBAN", "CARD", "IP", "DATE", "ID-NUMBER"]
TAG_ID = {t: i for i, t in enumerate(TAGS)}
PAD = 0

# --- characters ----------------------------------------------------------------------


def char_table() -> tuple[np.ndarray, int, str]:
    """Printable ASCII each distinct (case kept) except the digits, which are one id (the
    model must read the shape of a number, not its digits); any whitespace or control
    character one id; in U+0080-024F lowercase letters one id, uppercase letters one id,
    anything else (and every code point from U+0250 on) one id."""
    keys = ["<pad>", " ", "<digit>"] + [chr(c) for c in range(33, 127) if not chr(c).isdigit()] + ["<lower>", "<upper>", "<other>"]
    ids = {k: i for i, k in enumerate(keys)}
    table = []
    for cp in range(0x250):
        ch = chr(cp)
        if cp == 0:
            table.append(ids["<pad>"])
        elif ch.isspace() or cp < 32 or 127 <= cp < 0xA0:
            table.append(ids[" "])
        elif ch.isdigit():
            table.append(ids["<digit>"])
        elif cp < 127:
            table.append(ids[ch])
        elif ch.islower():
            table.append(ids["<lower>"])
        elif ch.isupper():
            table.append(ids["<upper>"])
        else:
            table.append(ids["<other>"])
    table.append(ids["<other>"])
    return np.array(table, dtype=np.int64), len(ids), "printable ASCII as is except digits (one class); accented lower/upper letters as two classes; whitespace as one"


# --- synthetic personal data ---------------------------------------------------------

FIRST = """James Mary Ahmed Fatima Liam Olivia Noah Emma Wei Mei Raj Priya Carlos Sofia Lukas Anna
Jan Eva Pierre Claire Giovanni Giulia Jose Lucia Sven Ingrid Piotr Agnieszka Mehmet Ayse Kwame Ama
Hiroshi Yuki Dmitri Olga Sean Aoife Tom Sarah David Laura Omar Leila Chen Li Ana Joao Jack Grace""".split()
LAST = """Smith Jones Taylor Brown Williams Khan Patel Garcia Martinez Muller Schmidt Dubois Martin
Rossi Bianchi Silva Santos Andersson Johansson Nowak Kowalski Yilmaz Kaya Mensah Tanaka Sato
Ivanov Murphy Kelly Walsh Nguyen Kim Lee Wang Zhang Fischer Weber Moreau Lefebvre Romano Costa
Jensen Hansen Novak Horvat Okafor Adeyemi Haddad Cohen Levi OBrien""".split()
DOMAINS = """example.com example.org mail.example.net acme-corp.com globex.io initech.co.uk uni-example.edu
hospital.example.org post.example.de boite.example.fr correo.example.es city.gov.example
contoso.com fabrikam.net northwind.io tailspin.example""".split()
CITIES = "London Berlin Paris Madrid Rome Amsterdam Stockholm Warsaw Istanbul Dublin Leeds Lyon Porto Oslo".split()


def _digits(r: random.Random, n: int) -> str:
    return "".join(r.choice(string.digits) for _ in range(n))


def gen_email(r: random.Random) -> str:
    f, l = r.choice(FIRST), r.choice(LAST)
    user = r.choice(
        [
            f"{f}.{l}",
            f"{f[0]}{l}",
            f"{f}{l[0]}",
            f"{f}_{l}{r.randint(1, 99)}",
            f"{f}.{l}+{r.choice(['news', 'work', 'shop'])}",
            f"{l}{r.randint(70, 99)}",
            r.choice(["info", "support", "billing", "hr", "office", "admin", "contact"]),
            f"{f[0]}.{l}",
        ]
    )
    if r.random() < 0.8:
        user = user.lower()
    return f"{user}@{r.choice(DOMAINS)}"


def gen_phone(r: random.Random) -> str:
    d = lambda n: _digits(r, n)  # noqa: E731
    return r.choice(
        [
            f"+44 20 {d(4)} {d(4)}",
            f"+44 7{d(3)} {d(6)}",
            f"020 {d(4)} {d(4)}",
            f"07{d(3)} {d(6)}",
            f"({r.randint(200, 989)}) {d(3)}-{d(4)}",
            f"{r.randint(200, 989)}-{d(3)}-{d(4)}",
            f"+1 {r.randint(200, 989)} {d(3)} {d(4)}",
            f"+1-{r.randint(200, 989)}-{d(3)}-{d(4)}",
            f"{r.randint(200, 989)}.{d(3)}.{d(4)}",
            f"+33 {r.randint(1, 9)} {d(2)} {d(2)} {d(2)} {d(2)}",
            f"0{r.randint(1, 7)} {d(2)} {d(2)} {d(2)} {d(2)}",
            f"+49 {r.randint(30, 89)} {d(7)}",
            f"0{r.randint(30, 89)} {d(8)}",
            f"+49 1{r.randint(51, 79)} {d(7)}",
            f"+31 {r.randint(10, 79)} {d(3)} {d(4)}",
            f"+34 {r.randint(600, 699)} {d(3)} {d(3)}",
            f"+39 {r.randint(300, 399)} {d(3)} {d(4)}",
            f"+46 {r.randint(70, 79)} {d(3)} {d(2)} {d(2)}",
            f"+48 {d(3)} {d(3)} {d(3)}",
            f"+90 5{d(2)} {d(3)} {d(2)} {d(2)}",
            f"+353 {r.randint(83, 89)} {d(3)} {d(4)}",
            f"+{r.randint(20, 99)}{d(9)}",
        ]
    )


IBAN_BBAN = {  # country: BBAN pattern (a = letter, n = digit, c = letter or digit)
    "GB": "aaaannnnnnnnnnnnnn",
    "DE": "nnnnnnnnnnnnnnnnnn",
    "FR": "nnnnnnnnnncccccccccccnn",
    "ES": "nnnnnnnnnnnnnnnnnnnn",
    "IT": "annnnnnnnnncccccccccccc",
    "NL": "aaaannnnnnnnnn",
    "BE": "nnnnnnnnnnnn",
    "CH": "nnnnnccccccccccccc",
    "PL": "nnnnnnnnnnnnnnnnnnnnnnnn",
    "SE": "nnnnnnnnnnnnnnnnnnnn",
    "TR": "nnnnnnnnnnnnnnnnnnnnnnnn",
    "IE": "aaaannnnnnnnnnnnnn",
}


def iban_check(cc: str, bban: str) -> str:
    s = bban + cc + "00"
    num = "".join(str(int(ch, 36)) for ch in s)
    return f"{98 - int(num) % 97:02d}"


def gen_iban(r: random.Random) -> str:
    cc = r.choice(sorted(IBAN_BBAN))
    pat = IBAN_BBAN[cc]
    out = []
    for p in pat:
        if p == "a":
            out.append(r.choice(string.ascii_uppercase))
        elif p == "n":
            out.append(r.choice(string.digits))
        else:
            out.append(r.choice(string.digits) if r.random() < 0.8 else r.choice(string.ascii_uppercase))
    bban = "".join(out)
    iban = cc + iban_check(cc, bban) + bban
    if r.random() < 0.65:
        return " ".join(iban[i : i + 4] for i in range(0, len(iban), 4))
    return iban


def luhn_complete(prefix_and_body: str) -> str:
    digits = [int(c) for c in prefix_and_body]
    total = 0
    for i, dgt in enumerate(reversed(digits)):
        if i % 2 == 0:
            dgt *= 2
            if dgt > 9:
                dgt -= 9
        total += dgt
    return prefix_and_body + str((10 - total % 10) % 10)


def luhn_valid(number: str) -> bool:
    ds = [int(c) for c in number if c.isdigit()]
    total = 0
    for i, dgt in enumerate(reversed(ds)):
        if i % 2 == 1:
            dgt *= 2
            if dgt > 9:
                dgt -= 9
        total += dgt
    return total % 10 == 0


def gen_card(r: random.Random) -> str:
    kind = r.random()
    if kind < 0.15:  # Amex 15 digits, 4-6-5
        num = luhn_complete(r.choice(["34", "37"]) + _digits(r, 12))
        sep = r.choice([" ", "-", ""])
        return sep.join([num[:4], num[4:10], num[10:]])
    prefix = r.choice(["4", "4", "51", "52", "53", "54", "55", "2221", "6011"])
    num = luhn_complete(prefix + _digits(r, 15 - len(prefix)))
    sep = r.choice([" ", " ", "-", ""])
    return sep.join(num[i : i + 4] for i in range(0, 16, 4))


def gen_ip(r: random.Random) -> str:
    k = r.random()
    if k < 0.3:
        return f"192.168.{r.randint(0, 255)}.{r.randint(1, 254)}"
    if k < 0.45:
        return f"10.{r.randint(0, 255)}.{r.randint(0, 255)}.{r.randint(1, 254)}"
    if k < 0.55:
        return f"172.{r.randint(16, 31)}.{r.randint(0, 255)}.{r.randint(1, 254)}"
    if k < 0.85:
        return ".".join(str(r.randint(1, 223) if i == 0 else r.randint(0, 255)) for i in range(4))
    groups = [f"{r.randint(0, 65535):x}" for _ in range(r.choice([3, 4, 8]))]
    if len(groups) == 8:
        return ":".join(groups)
    return r.choice(["2001:db8", "fe80", "2a02:8070"]) + "::" + ":".join(groups[:2])


WEEKDAYS = "Monday Tuesday Wednesday Thursday Friday Saturday Sunday".split()
MONTHS = "January February March April May June July August September October November December".split()


def gen_date(r: random.Random) -> str:
    y = r.randint(1940, 2030)
    m = r.randint(1, 12)
    d = r.randint(1, 28)
    mon = MONTHS[m - 1]
    suffix = "th" if 11 <= d <= 13 else {1: "st", 2: "nd", 3: "rd"}.get(d % 10, "th")
    return r.choice(
        [
            f"{y}-{m:02d}-{d:02d}",
            f"{d:02d}/{m:02d}/{y}",
            f"{m:02d}/{d:02d}/{y}",
            f"{d}/{m}/{y}",
            f"{d:02d}.{m:02d}.{y}",
            f"{d}.{m}.{y % 100:02d}",
            f"{d} {mon} {y}",
            f"{mon} {d}, {y}",
            f"{d} {mon[:3]} {y}",
            f"{mon[:3]} {d}, {y}",
            f"{d}{suffix} {mon} {y}",
            f"{d}{suffix} of {mon} {y}",
            f"{d:02d}-{m:02d}-{y}",
            f"{d}-{mon[:3]}-{y}",
            f"{r.choice(WEEKDAYS)} {d} {mon} {y}",
            f"{r.choice(WEEKDAYS)[:3]}, {d} {mon[:3]} {y}",
            f"{r.choice(WEEKDAYS)}, {mon} {d}, {y}",
        ]
    )


def gen_id(r: random.Random) -> tuple[str, str]:
    """(a personal ID number, a phrase naming its kind)."""
    L = string.ascii_uppercase
    d = lambda n: _digits(r, n)  # noqa: E731
    k = r.randrange(8)
    if k == 0:
        return f"{r.randint(100, 899)}-{d(2)}-{d(4)}", r.choice(["SSN", "social security number", "Social Security No."])
    if k == 1:
        ni = f"{r.choice('ABCEGHJKLMNPRSTWXYZ')}{r.choice('ABCEGHJKLMNPRSTWXYZ')}{d(6)}{r.choice('ABCD')}"
        if r.random() < 0.5:
            ni = f"{ni[:2]} {ni[2:4]} {ni[4:6]} {ni[6:8]} {ni[8]}"
        return ni, r.choice(["National Insurance number", "NI number", "NINO"])
    if k == 2:
        return r.choice([f"{r.choice(L)}{d(8)}", d(9), f"{r.choice(L)}{r.choice(L)}{d(7)}"]), r.choice(
            ["passport number", "passport no.", "Passport No", "passport"]
        )
    if k == 3:
        surname = r.choice(LAST).upper()[:5].ljust(5, "9")
        return f"{surname}{d(6)}{r.choice(L)}{r.choice(L)}{d(1)}{r.choice(L)}{r.choice(L)}", r.choice(
            ["driving licence number", "driver's licence", "licence no."]
        )
    if k == 4:
        nhs = d(10)
        return f"{nhs[:3]} {nhs[3:6]} {nhs[6:]}", r.choice(["NHS number", "NHS no."])
    if k == 5:
        return f"{r.choice('CFGHJKLMNPRTVWXYZ')}{d(2)}{r.choice(L)}{d(5)}", r.choice(["ID card number", "Personalausweis number", "identity card no."])
    if k == 6:
        return d(11), r.choice(["tax identification number", "TIN", "tax ID", "Steuer-ID"])
    return f"{d(8)}{r.choice(L)}", r.choice(["DNI", "national ID", "DNI number"])


# Distractors: things that look like personal data but are not (tagged O).
def gen_distractor(r: random.Random) -> str:
    d = lambda n: _digits(r, n)  # noqa: E731
    return r.choice(
        [
            f"order #{d(5)}",
            f"order number {d(8)}",
            f"invoice INV-{r.randint(2019, 2026)}-{d(4)}",
            f"ticket {r.choice(['INC', 'REQ', 'TKT'])}{d(7)}",
            f"version {r.randint(1, 12)}.{r.randint(0, 30)}.{r.randint(0, 99)}",
            f"v{r.randint(1, 5)}.{r.randint(0, 20)}",
            f"£{r.randint(1, 9999)}.{d(2)}",
            f"€{r.randint(1, 99)},{d(3)}.{d(2)}",
            f"${r.randint(1, 999)}",
            f"{r.randint(1, 12)}:{r.choice(['00', '15', '30', '45'])}",
            f"{r.randint(2, 95)}%",
            f"room {r.randint(1, 9)}.{d(2)}",
            f"SKU {r.choice(string.ascii_uppercase)}-{d(4)}",
            f"tracking number 1Z{d(3)}{r.choice(string.ascii_uppercase)}{r.choice(string.ascii_uppercase)}{d(10)}",
            f"ISBN 978-{d(1)}-{d(2)}-{d(6)}-{d(1)}",
            f"in {r.randint(1950, 2030)}",
            f"{r.randint(2, 500)} units",
            f"flight {r.choice(['BA', 'LH', 'AF', 'KL'])}{d(3)}",
            f"postcode {r.choice(['SW1A 1AA', 'EC1A 1BB', 'M1 1AE', '75008', '10115', '28013'])}",
            f"reference {r.choice(string.ascii_uppercase)}{d(6)}",
            f"{r.randint(1, 40)} km",
            f"port {r.choice([22, 80, 443, 5432, 8080])}",
            f"{r.randint(1, 9)}.{d(3)} seconds",
            f"batch {d(4)}-{d(2)}",
            f"{r.randint(1, 20)}.{r.randint(0, 20)}.{r.randint(0, 20)}.{r.randint(0, 9)}",
            f"pid {r.randint(100, 99999)}",
            f"[{r.randint(100, 9999)}]",
            f"line {r.randint(1, 999)}",
            f"{r.randint(1, 999)},{d(3)}",
            f"{r.randint(0, 23):02d}:{r.randint(0, 59):02d}:{r.randint(0, 59):02d}",
            f"{d(r.randint(12, 22))}",
            f"{r.choice(['A', 'B', 'C', 'K', 'X'])}{d(r.randint(3, 6))}",
            f"section {r.randint(1, 9)}.{r.randint(1, 9)}.{r.randint(1, 9)}",
            f"{r.randint(1, 99)}.{r.randint(0, 9)}%",
            f"{r.randint(10, 99)}.{d(2)} {r.choice(['EUR', 'USD', 'GBP', 'kg', 'MB', 'ms'])}",
            f"{r.choice(['Q1', 'Q2', 'Q3', 'Q4'])} {r.randint(2015, 2030)}",
            f"{r.randint(1, 12)}/{r.randint(1, 9)}",
            f"#{d(r.randint(3, 6))}",
            f"{r.choice(['CVE', 'RFC', 'ISO'])} {r.randint(1990, 2030) if r.random() < 0.5 else r.randint(100, 9999)}",
        ]
    )


# Templates: {EMAIL} {PHONE} {IBAN} {CARD} {IP} {DATE} {ID} (with {IDKIND}) {NAME} {CITY}
# {X} (a distractor). The last HOLDOUT_TEMPLATES are only used for the held-out set.
TEMPLATES = [
    "Please contact {NAME} at {EMAIL} if you have any questions.",
    "You can reach me on {PHONE} or by email at {EMAIL}.",
    "Send the refund to {IBAN}, account holder {NAME}.",
    "My card number is {CARD} and it expires next year.",
    "The login attempt came from {IP} at {X}.",
    "{NAME} was born on {DATE} in {CITY}.",
    "Her {IDKIND} is {ID}.",
    "Call {PHONE} to book an appointment.",
    "Invoice attached; please pay to IBAN {IBAN} by {DATE}.",
    "Server {IP} stopped responding after the update to {X}.",
    "Date of birth: {DATE}. {IDKIND}: {ID}.",
    "Hi {NAME}, thanks for your message. My new number is {PHONE}.",
    "Payment declined for card {CARD}; {X} is on hold.",
    "Contact: {NAME}, {EMAIL}, {PHONE}",
    "The meeting was moved to {DATE} because of {X}.",
    "Blocked {IP} after repeated failed logins for {EMAIL}.",
    "Please update my bank details: {IBAN}.",
    "{IDKIND} {ID}, issued in {CITY}.",
    "We shipped {X} on {DATE} to {NAME} in {CITY}.",
    "For urgent issues email {EMAIL} or phone {PHONE}.",
    "Customer {NAME} paid with {CARD} on {DATE}.",
    "Your {X} is confirmed.",
    "The price went up to {X} last month.",
    "No personal data here: just {X} and {X}.",
    "Traffic from {IP} and {IP} was dropped by the firewall.",
    "Applicant {NAME}, born {DATE}, {IDKIND} {ID}, lives in {CITY}.",
    "Wire the deposit to {IBAN} and email the receipt to {EMAIL}.",
    "The card ending in {CARD} was charged twice.",
    "Reminder: your appointment is on {DATE}. Questions? Call {PHONE}.",
    "Employee {NAME} ({EMAIL}) starts on {DATE}.",
    "Ping {IP} to check that the host is up; see {X}.",
    "I was told my {IDKIND} {ID} is not valid any more.",
    "{NAME} changed the account email to {EMAIL} from {IP}.",
    "Bitte überweisen Sie den Betrag auf {IBAN} bis zum {DATE}.",
    "Merci de me rappeler au {PHONE} avant le {DATE}.",
    "Mi correo es {EMAIL} y mi teléfono {PHONE}.",
    "Thanks, the package with {X} arrived in {CITY}.",
    "Lost card: {CARD}. Please block it immediately.",
    "{EMAIL}",
    "{PHONE}",
    "Patient {NAME}, DOB {DATE}, {IDKIND} {ID}.",
    "Refund of {X} sent to account {IBAN}.",
    "Access log: {IP} - - [{DATE}] GET /index.html 200",
    "Signed by {NAME} on {DATE} in {CITY}.",
    "Text me on {PHONE} when you land, my {X} is late.",
    "We received {X} from {NAME} yesterday.",
    "Use {CARD} for the hotel and {CARD} for the flights.",
    "Her details: {NAME}, {DATE}, {EMAIL}.",
    # --- held-out templates -------------------------------------------------------------
    "If the payment fails, try again with card {CARD} or transfer to {IBAN}.",
    "Suspicious sign-in for {EMAIL} from {IP} on {DATE}.",
    "Could you confirm that your {IDKIND} is {ID}? We have {X} on file.",
    "Our office number changed to {PHONE}; the old one stops working on {DATE}.",
    "Forwarded from {NAME} <{EMAIL}>: see {X} for details.",
    "Birth date {DATE}, {IDKIND} {ID}, phone {PHONE}.",
    "The router at {IP} lost its lease at {X}.",
    "Salary goes to {IBAN} from {DATE}.",
    "He paid {X} using {CARD} and asked for a receipt at {EMAIL}.",
    "Nothing sensitive: {X}, {X}, {CITY}.",
]
HOLDOUT_TEMPLATES = 10


def fill(template: str, r: random.Random) -> tuple[str, list[tuple[int, int, str]]]:
    """Text and its (start, end, tag) spans."""
    out, spans = [], []
    pos = 0
    idkind = None
    for m in re.finditer(r"\{([A-Z]+)\}", template):
        lit = template[pos : m.start()]
        out.append(lit)
        cur = sum(len(s) for s in out)
        slot = m.group(1)
        tag = None
        if slot == "EMAIL":
            val, tag = gen_email(r), "EMAIL"
        elif slot == "PHONE":
            val, tag = gen_phone(r), "PHONE"
        elif slot == "IBAN":
            val, tag = gen_iban(r), "IBAN"
        elif slot == "CARD":
            val, tag = gen_card(r), "CARD"
        elif slot == "IP":
            val, tag = gen_ip(r), "IP"
        elif slot == "DATE":
            val, tag = gen_date(r), "DATE"
        elif slot in ("ID", "IDKIND"):
            if idkind is None:
                idkind = gen_id(r)
            if slot == "ID":
                val, tag = idkind[0], "ID-NUMBER"
            else:
                val = idkind[1]
        elif slot == "NAME":
            val = f"{r.choice(FIRST)} {r.choice(LAST)}" if r.random() < 0.7 else r.choice(FIRST)
        elif slot == "CITY":
            val = r.choice(CITIES)
        elif slot == "X":
            val = gen_distractor(r)
        else:
            raise ValueError(slot)
        out.append(val)
        if tag:
            spans.append((cur, cur + len(val), tag))
        pos = m.end()
    out.append(template[pos:])
    text = "".join(out)
    if r.random() < 0.05:  # all lower case now and then (chat style)
        low = text.lower()
        if len(low) == len(text):
            text = low
    return text, spans


KEYS = {  # phrases that may introduce a value in free text (any may also be left out)
    "EMAIL": ["email", "e-mail:", "Email:", "mail", "write to", "contact:", "reply to", "from"],
    "PHONE": ["tel", "Tel.:", "phone", "mobile", "call", "ring", "ph:", "cell:", "fax", "WhatsApp"],
    "IBAN": ["IBAN", "IBAN:", "account", "bank account", "pay to", "Konto", "compte"],
    "CARD": ["card", "card no.", "Visa", "Mastercard", "credit card", "paid with", "CC:"],
    "IP": ["IP", "ip:", "from", "host", "address", "client", "src="],
    "DATE": ["on", "date:", "DOB", "born", "due", "since", "until", "expires", "dated"],
    "ID-NUMBER": ["SSN", "NI no.", "passport", "ID", "licence", "NHS no.", "tax ID", "DNI"],
}
GENERATORS = {"EMAIL": gen_email, "PHONE": gen_phone, "IBAN": gen_iban, "CARD": gen_card, "IP": gen_ip, "DATE": gen_date}


def free_text(r: random.Random, filler: list[str]) -> tuple[str, list]:
    """A natural sentence (from `filler`) with 1-2 values, and 0-2 distractors, inserted at
    word boundaries, each value after a key phrase or none."""
    words = r.choice(filler).split()
    inserts = []
    for _ in range(r.choice([1, 1, 2])):
        tag = r.choice(TAGS[1:])
        if tag == "ID-NUMBER":
            val, kind = gen_id(r)
            key = kind if r.random() < 0.6 else r.choice(KEYS[tag])
        else:
            val = GENERATORS[tag](r)
            key = r.choice(KEYS[tag])
        pre = "" if r.random() < 0.2 else key + r.choice([" ", " ", ": ", " = ", " "])
        inserts.append((pre, val, tag))
    for _ in range(r.choice([0, 1, 1, 2])):
        inserts.append(("", gen_distractor(r), None))
    r.shuffle(inserts)
    slots = sorted(r.randint(0, len(words)) for _ in inserts)
    out, spans = [], []
    wi = 0
    for (pre, val, tag), at in zip(inserts, slots):
        out.extend(words[wi:at])
        wi = at
        text_so_far = " ".join(out) + (" " if out else "")
        start = len(text_so_far) + len(pre)
        out.append(pre + val)
        if tag:
            spans.append((start, start + len(val), tag))
    out.extend(words[wi:])
    return " ".join(out), spans


def generate(n: int, seed: int, heldout: bool, filler: list[str]) -> list[tuple[str, list]]:
    """n texts: about half from templates, half free text with inserted values. The held-out
    set uses templates and filler sentences the training set never sees."""
    r = random.Random(seed)
    pool = TEMPLATES[-HOLDOUT_TEMPLATES:] if heldout else TEMPLATES[:-HOLDOUT_TEMPLATES]
    out = []
    while len(out) < n:
        if r.random() < 0.5:
            t = r.choice(pool)
            if r.random() < 0.25:  # two sentences in one text
                t = t + " " + r.choice(pool)
            text, spans = fill(t, r)
        else:
            text, spans = free_text(r, filler)
        if len(text) <= SEQ:
            out.append((text, spans))
    return out


def labels_for(text: str, spans, length: int) -> np.ndarray:
    y = np.zeros(length, dtype=np.int64)
    for s, e, tag in spans:
        y[s:e] = TAG_ID[tag]
    return y


def read_annotated(path) -> list[tuple[str, list]]:
    """Lines with inline spans [[TAG:text]]; '#' lines are comments."""
    out = []
    for line in path.read_text(encoding="utf-8").split("\n"):
        if not line.strip() or line.startswith("#"):
            continue
        text, spans, pos = [], [], 0
        for m in re.finditer(r"\[\[([A-Z-]+):(.*?)\]\]", line):
            text.append(line[pos : m.start()])
            start = sum(len(s) for s in text)
            text.append(m.group(2))
            if m.group(1) not in TAG_ID:
                raise ValueError(f"{path}: unknown tag {m.group(1)}")
            spans.append((start, start + len(m.group(2)), m.group(1)))
            pos = m.end()
        text.append(line[pos:])
        out.append(("".join(text), spans))
    return out


# --- the network (numpy, float64) ----------------------------------------------------

EMB, HID, K = 24, 48, 5
DILATIONS = [1, 2, 4, 8]


def init_params(vocab: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    p = {"E": rng.standard_normal((vocab, EMB)) * 0.5}
    cin = EMB
    for i, _ in enumerate(DILATIONS):
        p[f"W{i}"] = rng.standard_normal((K * cin, HID)) * np.sqrt(2.0 / (K * cin))
        p[f"b{i}"] = np.zeros(HID)
        cin = HID
    p["Wo"] = rng.standard_normal((HID, len(TAGS))) * np.sqrt(1.0 / HID)
    p["bo"] = np.zeros(len(TAGS))
    return p


def _im2col(x: np.ndarray, dil: int) -> np.ndarray:
    N, L, C = x.shape
    pad = dil * (K - 1) // 2
    xp = np.zeros((N, L + 2 * pad, C))
    xp[:, pad : pad + L] = x
    return np.concatenate([xp[:, j * dil : j * dil + L] for j in range(K)], axis=2)


def _col2im(dcols: np.ndarray, dil: int, C: int) -> np.ndarray:
    N, L, _ = dcols.shape
    pad = dil * (K - 1) // 2
    dxp = np.zeros((N, L + 2 * pad, C))
    for j in range(K):
        dxp[:, j * dil : j * dil + L] += dcols[:, :, j * C : (j + 1) * C]
    return dxp[:, pad : pad + L]


def forward(p, ids: np.ndarray, keep: bool = False):
    h = p["E"][ids]
    cache = []
    for i, dil in enumerate(DILATIONS):
        cols = _im2col(h, dil)
        N, L, KC = cols.shape
        pre = (cols.reshape(N * L, KC) @ p[f"W{i}"]).reshape(N, L, HID) + p[f"b{i}"]
        act = np.maximum(pre, 0.0)
        out = act + h if i > 0 else act
        if keep:
            cache.append((cols, pre))
        h = out
    N, L, _ = h.shape
    logits = (h.reshape(N * L, HID) @ p["Wo"]).reshape(N, L, -1) + p["bo"]
    return logits, h, cache


def loss_and_grads(p, ids, y, w):
    logits, h, cache = forward(p, ids, keep=True)
    P = softmax(logits)
    N, L, T = P.shape
    wsum = w.sum()
    nll = -np.log(np.take_along_axis(P, y[..., None], axis=2)[..., 0] + 1e-300)
    loss = float((nll * w).sum() / wsum)
    dlog = P.copy()
    np.put_along_axis(dlog, y[..., None], np.take_along_axis(dlog, y[..., None], axis=2) - 1.0, axis=2)
    dlog *= (w / wsum)[..., None]
    g = {"Wo": h.reshape(-1, HID).T @ dlog.reshape(-1, T), "bo": dlog.sum(axis=(0, 1))}
    dh = (dlog.reshape(N * L, T) @ np.ascontiguousarray(p["Wo"].T)).reshape(N, L, HID)
    for i in reversed(range(len(DILATIONS))):
        cols, pre = cache[i]
        dact = dh * (pre > 0)
        g[f"W{i}"] = cols.reshape(-1, cols.shape[2]).T @ dact.reshape(-1, HID)
        g[f"b{i}"] = dact.sum(axis=(0, 1))
        cin = EMB if i == 0 else HID
        dcols = (dact.reshape(N * L, HID) @ np.ascontiguousarray(p[f"W{i}"].T)).reshape(N, L, -1)
        dx = _col2im(dcols, DILATIONS[i], cin)
        dh = dx + dh if i > 0 else dx
    gE = np.zeros_like(p["E"])
    np.add.at(gE, ids.reshape(-1), dh.reshape(-1, EMB))
    g["E"] = gE
    return loss, g


def batches(samples, table, order, batch_size):
    for s in range(0, len(order), batch_size):
        idx = order[s : s + batch_size]
        maxlen = max(len(samples[i][0]) for i in idx)
        L = min(SEQ, ((maxlen + 32 + 15) // 16) * 16)
        ids = np.zeros((len(idx), L), dtype=np.int64)
        y = np.zeros((len(idx), L), dtype=np.int64)
        w = np.zeros((len(idx), L))
        for b, i in enumerate(idx):
            text, spans = samples[i]
            cps = np.array([ord(c) for c in text[:L]], dtype=np.int64)
            ids[b, : len(cps)] = table[np.clip(cps, 0, len(table) - 1)]
            y[b] = labels_for(text, spans, L)
            w[b, : len(cps)] = np.where(y[b, : len(cps)] > 0, 2.0, 1.0)
            w[b, len(cps) :] = 0.05  # padding: learn to say O there, lightly
        yield ids, y, w


def train(samples, table, vocab, seed: int, epochs: int, batch_size: int, lr: float, log=print):
    p = init_params(vocab, seed)
    opt = Adam(p, lr=lr)
    rng = np.random.default_rng(seed + 1)
    steps_per_epoch = (len(samples) + batch_size - 1) // batch_size
    total = epochs * steps_per_epoch
    step = 0
    for ep in range(epochs):
        order = rng.permutation(len(samples))
        losses = []
        for ids, y, w in batches(samples, table, order, batch_size):
            loss, g = loss_and_grads(p, ids, y, w)
            cur = lr * (0.5 * (1 + np.cos(np.pi * step / total)) * 0.95 + 0.05)
            opt.step(g, lr=cur)
            losses.append(loss)
            step += 1
        log(f"    epoch {ep + 1:2d}/{epochs}  loss {np.mean(losses):.4f}")
    return p


def finalize(p, decimals: int = 4) -> dict[str, np.ndarray]:
    return {k: rounded(v, decimals) for k, v in p.items()}


def predict(p, table, texts: list[str]) -> np.ndarray:
    """Tag probabilities [n, 256, 8] with the (rounded) parameters, float64."""
    ids = np.zeros((len(texts), SEQ), dtype=np.int64)
    for b, t in enumerate(texts):
        cps = np.array([ord(c) for c in t[:SEQ]], dtype=np.int64)
        ids[b, : len(cps)] = table[np.clip(cps, 0, len(table) - 1)]
    q = {k: v.astype(np.float64) for k, v in p.items()}
    out = []
    for s in range(0, len(texts), 64):
        logits, _, _ = forward(q, ids[s : s + 64])
        out.append(softmax(logits))
    return np.concatenate(out, axis=0)


def build_graph(p32, table: np.ndarray, props: dict, doc: str):
    g = Graph()
    T = len(table)
    tab = g.init("char_table", table.astype(np.int64))
    E = g.init("char_embedding", p32["E"])
    x = g.op("Cast", ["codepoints"], "chars", to=7)
    x = g.op("Clip", [x, g.const(0, np.int64), g.const(T - 1, np.int64)], "chars")
    ids = g.op("Gather", [tab, x], "chars", axis=0)
    h = g.op("Gather", [E, ids], "embed", axis=0)  # [B, 256, EMB]
    h = g.op("Transpose", [h], "embed", perm=[0, 2, 1])  # [B, EMB, 256]
    cin = EMB
    for i, dil in enumerate(DILATIONS):
        # numpy W [K*cin, HID] with row j*cin + c  ->  ONNX W [HID, cin, K]
        w = p32[f"W{i}"].reshape(K, cin, HID).transpose(2, 1, 0)
        wn = g.init(f"conv{i}.weight", np.ascontiguousarray(w))
        bn = g.init(f"conv{i}.bias", p32[f"b{i}"])
        pad = dil * (K - 1) // 2
        c = g.op("Conv", [h, wn, bn], f"conv{i}", dilations=[dil], kernel_shape=[K], pads=[pad, pad], strides=[1])
        c = g.op("Relu", [c], f"conv{i}")
        h = g.op("Add", [c, h], f"conv{i}") if i > 0 else c
        cin = HID
    wo = g.init("out.weight", np.ascontiguousarray(p32["Wo"].T[:, :, None]))  # [T, HID, 1]
    bo = g.init("out.bias", p32["bo"])
    logits = g.op("Conv", [h, wo, bo], "out", kernel_shape=[1])
    logits = g.op("Transpose", [logits], "out", perm=[0, 2, 1])  # [B, 256, T]
    g.op("Softmax", [logits], "out", out="tags", axis=-1)
    return g.model(
        "pii-tagger",
        [vi("codepoints", INT32, ["batch", SEQ])],
        [vi("tags", FLOAT, ["batch", SEQ, len(TAGS)])],
        doc,
        props,
    )


def char_f1(pred: np.ndarray, gold: np.ndarray) -> dict[str, tuple[float, float, float, int]]:
    """Per tag (not O): precision, recall, F1 over characters, and gold character count."""
    out = {}
    for t in range(1, len(TAGS)):
        tp = int(np.sum((pred == t) & (gold == t)))
        fp = int(np.sum((pred == t) & (gold != t)))
        fn = int(np.sum((pred != t) & (gold == t)))
        pr = tp / (tp + fp) if tp + fp else 0.0
        rc = tp / (tp + fn) if tp + fn else 0.0
        f = 2 * pr * rc / (pr + rc) if pr + rc else 0.0
        out[TAGS[t]] = (pr, rc, f, tp + fn)
    return out


def evaluate(p32, table, samples) -> dict:
    texts = [t for t, _ in samples]
    probs = predict(p32, table, texts)
    preds, golds = [], []
    spans_hit = {t: [0, 0] for t in TAGS[1:]}
    for (text, spans), pr in zip(samples, probs):
        n = min(len(text), SEQ)
        gold = labels_for(text, spans, SEQ)[:n]
        pred = pr[:n].argmax(axis=1)
        preds.append(pred)
        golds.append(gold)
        for s, e, tag in spans:
            if e > SEQ:
                continue
            seg = pred[s:e]
            spans_hit[tag][1] += 1
            if np.mean(seg == TAG_ID[tag]) >= 0.5:  # most of the span found with the right tag
                spans_hit[tag][0] += 1
    pred, gold = np.concatenate(preds), np.concatenate(golds)
    per = char_f1(pred, gold)
    tp = sum(int(np.sum((pred == t) & (gold == t))) for t in range(1, len(TAGS)))
    fp = sum(int(np.sum((pred == t) & (gold != t))) for t in range(1, len(TAGS)))
    fn = sum(int(np.sum((pred != t) & (gold == t))) for t in range(1, len(TAGS)))
    micro_p = tp / (tp + fp) if tp + fp else 0.0
    micro_r = tp / (tp + fn) if tp + fn else 0.0
    micro = 2 * micro_p * micro_r / (micro_p + micro_r) if micro_p + micro_r else 0.0
    return {"per_tag": per, "micro": (micro_p, micro_r, micro), "spans": spans_hit, "n_texts": len(samples), "n_chars": int(len(gold))}


def realistic_path():
    return DATA / "pii" / "realistic.txt"
