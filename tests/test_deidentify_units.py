"""The engine's parts on their own: date shifting, descriptor cleaning, keyed values, profile."""

from __future__ import annotations

from datetime import timedelta

import pytest

from deidentify import DomainResolver, PatientIdDomain, PrivateTag, Profile, pseudonym
from deidentify.dates import shift_date, shift_datetime, shift_pair, shift_time
from deidentify.descriptors import clean_descriptor
from deidentify.pseudonyms import PSEUDONYM_PREFIX, UNAFFILIATED, date_offset, keyed_uid
from tests.deidentify_support import FixedMacKey

BACK = timedelta(days=-400, seconds=11 * 3600)  # 400 days back, 11 hours later in the day
KEY = FixedMacKey()
HOSP = PatientIdDomain.of_issuer("HOSP")


class TestDateShifting:
    @pytest.mark.parametrize(
        ("value", "shifted"),
        [
            ("20230517", "20220412"),
            ("2023.05.17", "20220412"),  # ACR-NEMA form, written back in the current form
            ("202305", "202204"),
            ("2023", "2022"),
            ("20230517-20230601", "20220412-20220427"),
            ("-20230601", "-20220427"),
            ("", ""),
        ],
    )
    def test_date_keeps_its_precision(self, value: str, shifted: str) -> None:
        assert shift_date(value, BACK) == shifted

    @pytest.mark.parametrize(
        ("value", "shifted"),
        [
            ("143207.4185", "013207.4185"),
            ("143207", "013207"),
            ("1432", "0132"),
            ("14", "01"),
            ("14:32:07.1", "013207.1"),
        ],
    )
    def test_time_keeps_its_precision(self, value: str, shifted: str) -> None:
        assert shift_time(value, BACK) == shifted

    @pytest.mark.parametrize(
        ("value", "shifted"),
        [
            ("20230517143526.9912+0200", "20220413013526.9912+0200"),
            ("20230517143526-0500", "20220413013526-0500"),
            ("2023051714", "2022041301"),
            ("2023", "2022"),
        ],
    )
    def test_datetime_keeps_precision_and_utc_offset(self, value: str, shifted: str) -> None:
        assert shift_datetime(value, BACK) == shifted

    def test_a_time_crossing_midnight_moves_its_date(self) -> None:
        assert shift_pair("20230517", "143207.4185", BACK) == ("20220413", "013207.4185")
        assert shift_pair("20230517", "090000", BACK) == ("20220412", "200000")

    @pytest.mark.parametrize("value", ["2023-05-17x", "abc", "20231345", "00010101"])
    def test_an_unparseable_date_is_refused_not_kept(self, value: str) -> None:
        with pytest.raises(ValueError):
            shift_date(value, BACK)


class TestDescriptorCleaning:
    def test_known_terms_and_measures_are_kept(self) -> None:
        assert clean_descriptor("AXIAL 1.0MM BONE B30f 120kV") == "AXIAL 1.0MM BONE B30f 120kV"

    def test_names_and_numbers_are_dropped(self) -> None:
        cleaned = clean_descriptor("Knee left, Marguerite QUUXLEIGH MRN 4417093 17/05/2023")
        assert cleaned == "Knee left"

    def test_a_dotted_date_is_not_a_measure(self) -> None:
        assert clean_descriptor("KNEE L DOB 12.05.61 Quuxleigh") == "KNEE L"

    def test_a_number_beside_another_number_is_not_a_measure(self) -> None:
        assert clean_descriptor("CT HIP 4.417 093 PQX") == "CT HIP"
        assert clean_descriptor("AXIAL 0.625 BONE") == "AXIAL 0.625 BONE"
        assert clean_descriptor("HIP 1.25MM 3 2") == "HIP 1.25MM"

    def test_nothing_known_gives_an_empty_value(self) -> None:
        assert clean_descriptor("Dr Vantongerloo, +33 4 7299 1834") == ""


class TestKeyedValues:
    def test_pseudonym_format_and_stability(self) -> None:
        first = pseudonym(KEY, "PQX4417093", HOSP)
        assert first == pseudonym(KEY, " PQX4417093\0", PatientIdDomain.of_issuer("HOSP \0"))
        assert first.startswith(PSEUDONYM_PREFIX) and len(first) == len(PSEUDONYM_PREFIX) + 16

    def test_domain_and_field_boundaries_matter(self) -> None:
        a, b = PatientIdDomain.of_issuer("A"), PatientIdDomain.of_issuer("B")
        assert pseudonym(KEY, "123", a) != pseudonym(KEY, "123", b)
        assert pseudonym(KEY, "12", PatientIdDomain.of_issuer("3A")) != pseudonym(KEY, "123", a)

    def test_an_organisation_and_an_issuer_spelt_alike_are_two_domains(self) -> None:
        organisation = PatientIdDomain.of_organisation("HOSP")
        assert pseudonym(KEY, "123", organisation) != pseudonym(KEY, "123", HOSP)
        assert date_offset(KEY, "123", organisation) != date_offset(KEY, "123", HOSP)
        assert pseudonym(KEY, "123", UNAFFILIATED) != pseudonym(KEY, "123", HOSP)

    def test_ten_thousand_patients_get_ten_thousand_pseudonyms(self) -> None:
        names = {pseudonym(KEY, f"P{n:06d}", HOSP) for n in range(10_000)}
        assert len(names) == 10_000

    def test_keyed_uid_is_a_2_25_uid_of_at_most_64_characters(self) -> None:
        uid = keyed_uid(KEY, "1.2.826.0.1.3680043.8.498.1234567890")
        assert uid.startswith("2.25.") and len(uid) <= 64
        assert uid == keyed_uid(KEY, "1.2.826.0.1.3680043.8.498.1234567890\0")
        number = int(uid[5:])
        assert (number >> 76) & 0xF == 8  # UUID version 8
        assert (number >> 62) & 0x3 == 0b10  # RFC 9562 variant

    def test_registry_uids_are_unchanged(self) -> None:
        for uid in ("1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.3.1.2.3.1"):
            assert keyed_uid(KEY, uid) == uid

    def test_date_offset_is_one_to_ten_years_back(self) -> None:
        offsets = [date_offset(KEY, f"P{n}", HOSP) for n in range(200)]
        assert all(timedelta(days=-3653) <= o <= timedelta(days=-365) for o in offsets)
        assert len(set(offsets)) == 200


class TestDomainRule:
    RULE = DomainResolver("org-a", {"HOSP-A": "org-a", "1.2.3.4.5": "org-a", "HOSP-B": "org-b"})

    def test_no_issuer_and_a_registered_issuer_are_the_studys_organisation(self) -> None:
        own = PatientIdDomain.of_organisation("org-a")
        assert self.RULE.domain("") == self.RULE.domain(" HOSP-A \0") == own
        assert self.RULE.domain("1.2.3.4.5") == own

    def test_another_organisations_registered_issuer_is_that_organisation(self) -> None:
        assert self.RULE.domain("HOSP-B") == PatientIdDomain.of_organisation("org-b")

    def test_an_unregistered_issuer_is_a_domain_of_its_own(self) -> None:
        assert self.RULE.domain("REGION-1") == PatientIdDomain.of_issuer("REGION-1")

    def test_issuers_are_compared_with_their_case(self) -> None:
        assert self.RULE.domain("hosp-a") == PatientIdDomain.of_issuer("hosp-a")

    def test_no_issuer_without_an_organisation_is_unaffiliated(self) -> None:
        assert DomainResolver(None, {"HOSP-A": "org-a"}).domain("") == UNAFFILIATED


class TestProfile:
    def test_default_codes(self) -> None:
        values = [code.value for code in Profile().method_codes]
        assert values == ["113100", "113108", "113107", "113105"]

    def test_both_date_options_are_refused(self) -> None:
        with pytest.raises(ValueError):
            Profile(retain_full_dates=True)

    @pytest.mark.parametrize("text", ["ACME|0008|01", "ACME|0009|100", "|0009|01", "ACME"])
    def test_malformed_safelist_entries_are_refused(self, text: str) -> None:
        with pytest.raises(ValueError):
            PrivateTag.parse(text)

    def test_safelist_entry_parses(self) -> None:
        assert PrivateTag.parse("SIEMENS CSA HEADER|0029|10") == PrivateTag(
            "SIEMENS CSA HEADER", 0x0029, 0x10
        )
