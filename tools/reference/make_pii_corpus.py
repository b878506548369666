#!/usr/bin/env python3
"""Writes tests/golden/crypto/pii_corpus.jsonl: PII masking cases with exact expected findings.

Valid resident ids (GB 11643-1999, ISO 7064 MOD 11-2) and Luhn card numbers are computed here, independently of the
C++ scanners, and every negative that relies on a failed check is asserted to fail it. Run from the repo root:
    python3 tools/reference/make_pii_corpus.py
"""
import datetime
import json
import os

ID_WEIGHTS = [2 ** (17 - i) % 11 for i in range(17)]  # ISO 7064 MOD 11-2 weights, derived rather than copied
ID_CHECK = "10X98765432"


def id_check(first17: str) -> str:
    return ID_CHECK[sum(int(c) * w for c, w in zip(first17, ID_WEIGHTS)) % 11]


def make_id(region: str, birth: str, seq: str) -> str:
    datetime.date(int(birth[:4]), int(birth[4:6]), int(birth[6:]))  # raises on an invalid date
    body = region + birth + seq
    return body + id_check(body)


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, c in enumerate(reversed(digits)):
        v = int(c)
        if i % 2 == 1:
            v = v * 2
            v = v - 9 if v > 9 else v
        total += v
    return total % 10 == 0


def luhn_complete(prefix: str) -> str:
    for d in "0123456789":
        if luhn_ok(prefix + d):
            return prefix + d
    raise AssertionError(prefix)


def group(s: str, sizes, sep=" ") -> str:
    out, i = [], 0
    for n in sizes:
        out.append(s[i:i + n])
        i += n
    assert i == len(s), (s, sizes)
    return sep.join(out)


def E(kind, match):
    return {"kind": kind, "match": match}


def cases():
    id1 = make_id("110105", "19491231", "002")
    assert id1 == "11010519491231002X", id1  # the well-known published example
    id2 = make_id("310104", "19880520", "123")
    id3 = make_id("440305", "20000229", "417")  # leap day
    id4 = make_id("510107", "19751103", "231")
    idx = next(make_id("320102", "1990%02d15" % m, "04" + str(k)) for m in range(1, 13) for k in range(10)
               if make_id("320102", "1990%02d15" % m, "04" + str(k)).endswith("X"))
    bad_check = id2[:17] + ("0" if id2[17] != "0" else "1")
    assert make_id(id2[:6], id2[6:14], id2[14:17]) != bad_check
    bad_date = "11010519491331002"
    bad_date += id_check(bad_date)  # checksum right, month 13
    id15 = "110105491231002"

    card19 = luhn_complete("622202020000000000")
    card_grouped = luhn_complete("622848001234567890")
    visa = "4111111111111111"
    assert luhn_ok(visa)
    mc2 = luhn_complete("222100000000000")
    mc5 = "5500000000000004"
    assert luhn_ok(mc5)
    amex = "378282246310005"
    assert luhn_ok(amex)
    abc = luhn_complete("955998000012345678")  # 9559 domestic debit, 19 digits
    bad_luhn = visa[:15] + "2"
    assert not luhn_ok(bad_luhn)
    isbn = "9787111547426"
    assert not luhn_ok(isbn), "pick an ISBN that fails Luhn for the negative case"
    ts = "20261205123045"
    order18 = "202612051230451234"
    assert luhn_ok(luhn_complete("202612051230451")) and not order18.startswith(("3", "4", "5", "6", "9"))
    order_luhn = luhn_complete("202612051230451")  # passes Luhn but date-led: not an issuer range

    c = []
    # --- resident ids
    c.append((f"我的身份证号是{id1}，请核对", [E("resident_id", id1)]))
    c.append((f"ID card: {id2}.", [E("resident_id", id2)]))
    c.append((f"闰日出生 {id3} 已登记", [E("resident_id", id3)]))
    c.append((f"证件号码：{group(id4, [6, 8, 4])}", [E("resident_id", group(id4, [6, 8, 4]))]))
    c.append((f"id={idx.lower()}&x=1", [E("resident_id", idx.lower())]))
    c.append((f"旧身份证号{id15}（15位）", [E("resident_id", id15)]))
    c.append((f"校验位错误的号码 {bad_check} 不应匹配", []))
    c.append((f"日期非法 {bad_date}", []))
    c.append((f"longer run {id2}7 is not an id", []))
    c.append((f"订单号：{order18}", []))
    # --- mobile phones
    c.append(("call me at +86 138 0013 8000", [E("mobile_phone", "+86 138 0013 8000")]))
    c.append(("手机13800138000。", [E("mobile_phone", "13800138000")]))
    c.append(("手机：139-1234-5678，白天联系", [E("mobile_phone", "139-1234-5678")]))
    c.append(("Mobile: 0086 15912345678", [E("mobile_phone", "0086 15912345678")]))
    c.append(("tel 8613812345678 ok", [E("mobile_phone", "8613812345678")]))
    c.append(("13800138000,13900139000", [E("mobile_phone", "13800138000"), E("mobile_phone", "13900139000")]))
    c.append(('{"phone":"18612345678","name":"王五"}', [E("mobile_phone", "18612345678")]))
    c.append(("+86-177-0000-1111 是备用号", [E("mobile_phone", "+86-177-0000-1111")]))
    c.append(("12-digit run 138001380001 is not a phone", []))
    c.append(("ten digits 1380013800", []))
    c.append(("不是手机号 12812345678", []))
    c.append(("ORD13800138000 shipped", []))
    c.append(("Tel13800138000 (glued to a word: left alone by design)", []))
    c.append(("房间 1203 13800138000", [E("mobile_phone", "13800138000")]))
    c.append(("grouped 138 0013 8000 1234 is a longer number", []))
    c.append(("批次 13800138000123", []))
    c.append(("pi is 3.13800138000", []))
    # --- landlines
    c.append(("办公电话 010-62345678", [E("landline", "010-62345678")]))
    c.append(("Shenzhen office (0755)88881234", [E("landline", "(0755)88881234")]))
    c.append(("电话：021 62345678转8001，工作日", [E("landline", "021 62345678转8001")]))
    c.append(("Tel: +86-10-62345678", [E("landline", "+86-10-62345678")]))
    c.append(("（020）83456789", [E("landline", "（020）83456789")]))
    c.append(("call 0571-8765432 ext. 12 today", [E("landline", "0571-8765432 ext. 12")]))
    c.append(("dated 2026-12-05", []))
    c.append(("room 010-1234 on floor 3", []))
    c.append(("unseparated 01062345678", []))
    # --- bank cards
    c.append((f"卡号 {group(card19, [4, 4, 4, 4, 3])}", [E("bank_card", group(card19, [4, 4, 4, 4, 3]))]))
    c.append((f"银行卡{card_grouped}，户名李四", [E("bank_card", card_grouped)]))
    c.append((f"card {group(visa, [4, 4, 4, 4], '-')} exp 12/28", [E("bank_card", group(visa, [4, 4, 4, 4], '-'))]))
    c.append((f"MC {mc2}", [E("bank_card", mc2)]))
    c.append((f"Amex {group(amex, [4, 6, 5])} on file", [E("bank_card", group(amex, [4, 6, 5]))]))
    c.append((f"农行借记卡：{abc}", [E("bank_card", abc)]))
    c.append((f"card {bad_luhn} declined", []))
    c.append((f"ISBN {isbn}", []))
    c.append(("ISBN 978-7-111-54742-6", []))
    c.append((f"log ts={ts}", []))
    c.append((f"order {order_luhn}", []))
    c.append(("1234 5678 9012 3456 7890", []))
    c.append(("zeros 0000000000000000", []))
    # --- e-mail
    c.append(("write to alice.smith+tag@example.com please", [E("email", "alice.smith+tag@example.com")]))
    c.append(("联系邮箱：zhang_san@mail.example.com.cn。", [E("email", "zhang_san@mail.example.com.cn")]))
    c.append(("QQ邮箱13800138000@qq.com", [E("email", "13800138000@qq.com")]))
    c.append(("mailto:ops-team@bank.example.org", [E("email", "ops-team@bank.example.org")]))
    c.append(("user@localhost is local only", []))
    c.append(("handle @someone on chat", []))
    c.append(("bad a..b@example.com", []))
    # --- IPv4
    c.append(("client 192.168.1.10 connected", [E("ipv4", "192.168.1.10")]))
    c.append(("from 10.0.0.1:8080 ok", [E("ipv4", "10.0.0.1")]))
    c.append(("服务器地址是172.16.254.1。", [E("ipv4", "172.16.254.1")]))
    c.append(("IP=8.8.8.8;", [E("ipv4", "8.8.8.8")]))
    c.append(("version 10.0.0.1.2", []))
    c.append(("v1.2.3.4.5 released", []))
    c.append(("version 1.2.3.4", []))
    c.append(("leading zero 1.02.3.4", []))
    c.append(("octet 999.1.1.1", []))
    c.append(("amount 1,234,567.89 yuan", []))
    # --- IPv6
    full6 = "2001:0db8:85a3:0000:0000:8a2e:0370:7334"
    c.append((f"addr {full6} up", [E("ipv6", full6)]))
    c.append(("link fe80::1ff:fe23:4567:890a%eth0", [E("ipv6", "fe80::1ff:fe23:4567:890a")]))
    c.append(("connect to ::1 port 80", [E("ipv6", "::1")]))
    c.append(("[2001:db8::8a2e:370:7334]:443", [E("ipv6", "2001:db8::8a2e:370:7334")]))
    c.append(("mapped ::ffff:192.0.2.128 seen", [E("ipv6", "::ffff:192.0.2.128")]))
    c.append(("addr:2001:db8::1", [E("ipv6", "2001:db8::1")]))
    c.append(("MAC 00:1A:2B:3C:4D:5E", []))
    c.append(("step 1:: done, prefix fe80:: only", []))
    c.append(("at 12:30:45 today", []))
    c.append(("std::vector<int> v; a::b(c);", []))
    # --- mixed and other negatives
    c.append((f"患者张三，身份证{id2}，电话13912345678，邮箱 a@b.cn", [
        E("resident_id", id2), E("mobile_phone", "13912345678"), E("email", "a@b.cn")]))
    c.append((f"Patient record: card {group(mc5, [4, 4, 4, 4])}, email john.doe@hospital.org, ip 203.0.113.7", [
        E("bank_card", group(mc5, [4, 4, 4, 4])), E("email", "john.doe@hospital.org"), E("ipv4", "203.0.113.7")]))
    c.append(("sha256 e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", []))
    c.append(("2026/12/05 12:30:45 INFO request done in 123 ms", []))
    c.append(("价格 ¥12345678.90，数量 100", []))
    c.append(("今天天气很好，我们去公园散步吧。", []))
    c.append(("", []))
    return c


def main():
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    path = os.path.join(root, "tests", "golden", "crypto", "pii_corpus.jsonl")
    all_cases = cases()
    with open(path, "w", encoding="utf-8") as f:
        for text, expect in all_cases:
            for e in expect:
                assert e["match"] in text, (text, e)
            f.write(json.dumps({"text": text, "expect": expect}, ensure_ascii=False) + "\n")
    n_pos = sum(1 for _, e in all_cases if e)
    print(f"{path}: {len(all_cases)} cases ({n_pos} with PII, {len(all_cases) - n_pos} without)")


if __name__ == "__main__":
    main()
