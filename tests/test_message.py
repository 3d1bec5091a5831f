"""Parsing: whatever arrives becomes a Post with readable text, and parsing never raises."""

from listmod.message import count_links, parse


def test_encoded_words_and_charsets_are_decoded():
    raw = (b"From: =?iso-8859-1?q?J=F6rg_M=FCller?= <Joerg@Example.ORG>\r\n"
           b"Subject: =?utf-8?b?0J/RgNC40LLQtdGC?= and =?koi8-r?q?=D0=D2=C9=D7=C5=D4?=\r\n"
           b"Content-Type: text/plain; charset=koi8-r\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
           ) + "Привет, мир".encode("koi8-r") + b"\r\n"
    post = parse(raw, "joerg@example.org")
    assert post.from_name == "Jörg Müller" and post.from_address == "joerg@example.org"
    assert post.subject == "Привет and привет"
    assert post.body.strip() == "Привет, мир"
    assert post.problems == ()


def test_raw_utf8_headers_from_smtputf8_mail_are_read():
    raw = "From: Zoë <zoë@exämple.org>\r\nSubject: Grüße\r\n\r\nHallo\r\n".encode()
    post = parse(raw, "zoë@exämple.org")
    assert post.subject == "Grüße"
    assert post.from_address == "zoë@exämple.org"


def test_html_only_mail_is_reduced_to_text_and_links_are_counted():
    raw = (b"From: a@example.org\r\nSubject: html\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
           b"<html><head><style>p{color:red}</style></head><body><p>Hello <b>world</b></p>"
           b"<a href=\"https://example.com/x\">click</a> and www.example.net</body></html>\r\n")
    post = parse(raw, "a@example.org")
    assert "Hello world" in post.body and "color" not in post.body
    assert post.links == 2


def test_attachments_are_listed_with_type_name_and_decoded_size():
    raw = (b"From: a@example.org\r\nSubject: files\r\nMIME-Version: 1.0\r\n"
           b"Content-Type: multipart/mixed; boundary=XX\r\n\r\n"
           b"--XX\r\nContent-Type: multipart/alternative; boundary=YY\r\n\r\n"
           b"--YY\r\nContent-Type: text/plain\r\n\r\nplain text\r\n"
           b"--YY\r\nContent-Type: text/html\r\n\r\n<p>html text</p>\r\n--YY--\r\n"
           b"--XX\r\nContent-Type: application/pdf; name=\"r.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\n"
           b"QUFBQUFBQUFBQQ==\r\n"
           b"--XX\r\nContent-Type: application/octet-stream\r\n"
           b"Content-Disposition: attachment; filename*=utf-8''%C3%BCbung.exe\r\n\r\nMZ\r\n"
           b"--XX\r\nContent-Type: message/rfc822\r\n\r\nSubject: inner\r\n\r\nforwarded\r\n--XX--\r\n")
    post = parse(raw, "a@example.org")
    assert post.body.strip() == "plain text"  # the plain alternative, not both
    # (the CRLF before a boundary belongs to the boundary, RFC 2046 5.1.1: "MZ" is 2 bytes)
    assert [(a.content_type, a.filename, a.size) for a in post.attachments] == [
        ("application/pdf", "r.pdf", 10), ("application/octet-stream", "übung.exe", 2),
        ("message/rfc822", "", len(b"Subject: inner\n\nforwarded")),
    ]


def test_recipients_thread_keys_and_message_id_are_read():
    raw = (b"From: a@example.org\r\nTo: x@example.org, Y <y@example.org>\r\nCc: z@example.org\r\n"
           b"Message-ID: <m1@example.org>\r\nIn-Reply-To: <p1@example.org>\r\n"
           b"References: <r0@example.org> <p1@example.org>\r\n\r\nbody\r\n")
    post = parse(raw, "a@example.org")
    assert post.recipients == 3
    assert (post.message_id, post.in_reply_to) == ("<m1@example.org>", "<p1@example.org>")
    assert post.references == ("<r0@example.org>", "<p1@example.org>")


def test_a_missing_or_bad_from_falls_back_to_the_envelope_sender():
    post = parse(b"From: not an address\r\nSubject: x\r\n\r\nbody\r\n", "env@example.org")
    assert post.from_address == "" and post.sender == "env@example.org"


def test_unparseable_input_becomes_a_post_with_problems_never_an_exception():
    for raw in (b"", b"\x00\x01\x02", b"no headers at all, just text\r\n",
                b"Content-Type: multipart/mixed; boundary=q\r\n\r\nno parts here\r\n",
                b"Subject: \xff\xfe\r\nContent-Type: text/plain; charset=no-such-charset\r\n\r\n\xff\r\n"):
        post = parse(raw, "a@example.org")
        assert post.raw_size == len(raw)
    assert parse(b"\x00\x01", "a@example.org").problems
    assert "boundary never appears" in parse(
        b"Content-Type: multipart/mixed; boundary=q\r\n\r\nno parts\r\n", "a@e.org").problems[0]


def test_count_links():
    assert count_links("see https://a.example/x, www.b.example and HTTP://C.example") == 3
    assert count_links("https://www.example.org is one link") == 1
    assert count_links("mail me at x@www.example.org; ftp://files.example") == 0


def test_internal_and_special_use_domains_are_addresses_too():
    # lists on internal names (and the embedded demo on .localhost) must recognise their moderators
    for address in ("moderator@listmod.localhost", "a@lists.internal", "b@host.lan", "c@x.test"):
        assert parse(f"From: {address}\r\n\r\nx\r\n".encode(), "").from_address == address
