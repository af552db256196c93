"""The portal's forms: they parse what a browser sends; the rules live in the services.

TaskCreateForm turns the form into tasks.services.task_create's arguments, as the API's
TaskCreateSerializer does for JSON; the service then applies the same checks to both.
"""

import json

from django import forms

from collaborations.models import Organization
from core.inputs import DESCRIPTION_MAX_CHARS
from portal import selectors
from tasks import catalogue

KWARGS_PLACEHOLDER = '{"columns": ["age", "tsize"]}'


class LoginForm(forms.Form):
    username = forms.CharField(max_length=150, widget=forms.TextInput(attrs={"autofocus": True,
                                                                            "autocomplete": "username"}))
    password = forms.CharField(strip=False, max_length=4096,
                               widget=forms.PasswordInput(attrs={"autocomplete": "current-password"}))
    otp = forms.CharField(
        label="Authenticator code", required=False, max_length=64,
        widget=forms.TextInput(attrs={"autocomplete": "one-time-code", "inputmode": "numeric"}),
        help_text="Once you have set up a second factor: the code your app shows, or a recovery code.",
    )


class SecondFactorConfirmForm(forms.Form):
    code = forms.CharField(label="Code from the app", max_length=16, widget=forms.TextInput(
        attrs={"autocomplete": "one-time-code", "inputmode": "numeric", "autofocus": True}))


class OrganizationCheckboxes(forms.CheckboxSelectMultiple):
    """Checkboxes that name each organisation's collaborations, so the page can offer only
    the members of the collaboration chosen (the service refuses any other anyway)."""

    def __init__(self, memberships: dict[int, list[int]], **kwargs):
        super().__init__(**kwargs)
        self.memberships = memberships

    def create_option(self, name, value, *args, **kwargs):
        option = super().create_option(name, value, *args, **kwargs)
        org_id = getattr(value, "value", value)
        option["attrs"]["data-collaborations"] = " ".join(str(c) for c in self.memberships.get(org_id, ()))
        return option


class OrganizationChoiceField(forms.ModelMultipleChoiceField):
    def label_from_instance(self, obj: Organization) -> str:
        return obj.name


class TaskCreateForm(forms.Form):
    collaboration = forms.ModelChoiceField(queryset=None, empty_label="Choose a collaboration")
    organizations = OrganizationChoiceField(
        queryset=None, label="Organisations", help_text="The organisations whose nodes run the method on their data.",
        error_messages={"required": "Choose at least one organisation."},
    )
    algorithm = forms.ModelChoiceField(
        queryset=None, required=False, empty_label="None: give an image instead",
        help_text="An approved algorithm from the catalogue; its image is pinned to a digest.",
    )
    image = forms.CharField(
        max_length=500, required=False,
        help_text="Or an image reference, e.g. 127.0.0.1:5000/vantage/alg-summary (add @sha256:… to pin it).",
    )
    method = forms.CharField(max_length=200, help_text="The function of the algorithm to run.")
    kwargs = forms.CharField(
        label="Arguments (JSON object)", required=False, initial="{}",
        widget=forms.Textarea(attrs={"rows": 4, "spellcheck": "false", "placeholder": KWARGS_PLACEHOLDER}),
        help_text="Keyword arguments of the method, e.g. " + KWARGS_PLACEHOLDER,
    )
    databases = forms.CharField(
        required=False, max_length=1000,
        help_text="Database labels, comma-separated, each optionally with a type: gbsg2 or gbsg2:csv, extra:parquet.",
    )
    name = forms.CharField(max_length=200, required=False, help_text="Defaults to the method.")
    description = forms.CharField(required=False, max_length=DESCRIPTION_MAX_CHARS,
                                  widget=forms.Textarea(attrs={"rows": 2}))

    def __init__(self, *args, user, **kwargs):
        super().__init__(*args, **kwargs)
        choices = selectors.task_form_choices(user=user)
        memberships: dict[int, list[int]] = {}
        for org_id, collaboration_id in choices["memberships"]:
            memberships.setdefault(org_id, []).append(collaboration_id)
        self.fields["collaboration"].queryset = choices["collaborations"]
        # The widget first: setting the queryset hands the choices to the field's widget.
        self.fields["organizations"].widget = OrganizationCheckboxes(memberships)
        self.fields["organizations"].queryset = choices["organizations"]
        self.fields["algorithm"].queryset = choices["algorithms"]
        # Suggestions (a <datalist>): the catalogue's functions, and the images and methods
        # of the jobs the user sees.
        self.suggestions = {"image": choices["recent_images"], "method": choices["recent_methods"],
                            "databases": choices["database_labels"]}
        if choices["database_labels"]:
            self.fields["databases"].help_text += " The nodes report: " + ", ".join(choices["database_labels"]) + "."
        # One collaboration to choose from: chosen already.
        if not self.is_bound and not self.initial.get("collaboration") and len(choices["collaborations"]) == 1:
            self.initial["collaboration"] = choices["collaborations"][0].pk
        self.catalogue_guide = choices["guide"]
        for name, values in self.suggestions.items():
            if values:
                self.fields[name].widget.attrs["list"] = f"{name}-suggestions"

    def clean_kwargs(self) -> dict:
        text = self.cleaned_data["kwargs"].strip() or "{}"
        try:
            value = json.loads(text)
        except ValueError as exc:
            raise forms.ValidationError(f"Not valid JSON: {exc}.")
        if not isinstance(value, dict):
            raise forms.ValidationError(f"Must be a JSON object (keyword arguments), e.g. {KWARGS_PLACEHOLDER}.")
        return value

    def clean_databases(self) -> list[dict]:
        entries = []
        for item in self.cleaned_data["databases"].split(","):
            item = item.strip()
            if not item:
                continue
            label, sep, db_type = (part.strip() for part in item.partition(":"))
            if sep and ":" in db_type:
                raise forms.ValidationError(f"{item!r}: write label or label:type.")
            entries.append({"label": label, "type": db_type} if sep else {"label": label})
        return entries

    def clean(self):
        cleaned = super().clean()
        collaboration = cleaned.get("collaboration")
        if collaboration is not None and collaboration.encrypted:
            self.add_error("collaboration", "This collaboration encrypts task inputs for each organisation: "
                                            "create its tasks with the Python client, which does the encryption.")
        algorithm = cleaned.get("algorithm")
        if algorithm is not None and cleaned.get("method"):
            wrong_method = catalogue.method_error(algorithm.functions, cleaned["method"])
            if wrong_method:
                self.add_error("method", wrong_method)
            elif "kwargs" in cleaned:
                for message in catalogue.argument_errors(algorithm.functions, cleaned["method"], cleaned["kwargs"]):
                    self.add_error("kwargs", message)
        if cleaned.get("algorithm") is not None and cleaned.get("image"):
            self.add_error("image", "Give an image or choose a catalogue algorithm, not both.")
        elif cleaned.get("algorithm") is None and not cleaned.get("image") and "image" not in self.errors:
            self.add_error("image", "Give an image, or choose a catalogue algorithm.")
        return cleaned

    def service_kwargs(self) -> dict:
        """The arguments of tasks.services.task_create (all but the actor)."""
        data = self.cleaned_data
        # The container contract's input file: the same for every organisation here, as
        # only unencrypted collaborations get tasks from the portal.
        payload = json.dumps({"method": data["method"], "args": [], "kwargs": data["kwargs"]}).encode()
        return {
            "collaboration": data["collaboration"],
            "name": data["name"] or data["method"],
            "description": data["description"],
            "image": data["image"],
            "algorithm": data["algorithm"],
            "method": data["method"],
            "organization_inputs": {org.pk: payload for org in data["organizations"]},
            "databases": data["databases"],
        }
